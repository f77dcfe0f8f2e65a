"""Blue-green and canary switching against moto's ALB API, with every write asserted exactly.

moto (server mode) holds the listeners, rules and target groups. An event hook
on the bot's own boto3 client records each ModifyListener/ModifyRule request
as sent, and replays recorded DescribeTargetHealth answers for the states moto
does not model: moto reports every running target `healthy` at once, while AWS
reports an idle group's targets `unused` (Target.NotInUse), new ones `initial`,
and so on. The recorded answers follow the service model's `TargetHealth`
shape (botocore/data/elbv2/2015-12-01/service-2.json) and the reasons and
descriptions AWS documents in "Check the health of your targets"
(docs.aws.amazon.com/elasticloadbalancing/latest/application/check-target-health.html).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from actions import voice
from actions.base import PermanentError, PlanningError, StepContext
from actions.loadbalancer import (
    DEPLOYED_AT_TAG,
    LAST_HEALTHY_TAG,
    BlueGreenParams,
    BlueGreenTarget,
    RestoreTraffic,
    Route,
    Side,
    SwitchTraffic,
    memory_key,
)
from actions.loadbalancer.health import await_healthy
from actions.params import AwsConnection
from bot.domain.plans import default_point
from sandbox.web import Reply, Request, WebStub

pytest_plugins = ["tests.fakes.aws"]

SERVICE = "elastic-load-balancing-v2"
WRITES = ("ModifyListener", "ModifyRule")

# Recorded TargetHealth answers: (State, Reason, Description) as AWS sends them.
HEALTHY = ("healthy", None, None)
UNUSED = (
    "unused",
    "Target.NotInUse",
    "Target group is not configured to receive traffic from the load balancer",
)
INITIAL = ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress")
DRAINING = ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress")
UNHEALTHY = (
    "unhealthy",
    "Target.ResponseCodeMismatch",
    "Health checks failed with these codes: [502]",
)
UNAVAILABLE = ("unavailable", "Elb.InternalError", "Health checks failed due to an internal error")

OIDC = {
    "Issuer": "https://idp.example.com",
    "AuthorizationEndpoint": "https://idp.example.com/authorize",
    "TokenEndpoint": "https://idp.example.com/token",
    "UserInfoEndpoint": "https://idp.example.com/userinfo",
    "ClientId": "voxflow",
    "ClientSecret": "s3cret-never-stored",
    "OnUnauthenticatedRequest": "authenticate",
}
REDIRECT = {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}


def health_answer(*states: tuple[str, str | None, str | None]) -> dict[str, Any]:
    """Return a DescribeTargetHealth answer with one target per state."""
    targets = []
    for n, (state, reason, description) in enumerate(states):
        health = {"State": state}
        if reason:
            health |= {"Reason": reason, "Description": description or ""}
        target = {"Id": f"i-0abc{n:012d}", "Port": 80}
        targets.append({"Target": target, "HealthCheckPort": "80", "TargetHealth": health})
    return {"TargetHealthDescriptions": targets}


class Crash(Exception):
    """The bot dying at one point of a step (raised from a client hook)."""


@dataclass
class Hooks:
    """Event hooks on the bot's elbv2 clients: record writes, replay health, inject crashes."""

    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    health: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    crash: tuple[str, int, str] | None = None
    """(operation, nth call counted from 1, "before" or "after")."""
    counts: dict[str, int] = field(default_factory=dict)

    def attach(self, client: Any) -> Any:
        """Register the hooks on `client` and return it."""
        events = client.meta.events
        for op in WRITES:
            events.register(f"before-parameter-build.{SERVICE}.{op}", self._record)
            events.register(f"after-call.{SERVICE}.{op}", self._after)
        events.register(f"before-call.{SERVICE}.DescribeTargetHealth", self._health)
        return client

    def replay(self, group: str, *answers: dict[str, Any]) -> None:
        """Answer DescribeTargetHealth of `group` with `answers` in turn (the last repeats)."""
        self.health[group] = list(answers)

    def sent(self, op: str | None = None) -> list[dict[str, Any]]:
        """Return the write requests sent (of `op`), in order."""
        return [params for name, params in self.writes if op in (None, name)]

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.counts[model.name] = self.counts.get(model.name, 0) + 1
        self._maybe_crash(model.name, "before")
        self.writes.append((model.name, copy.deepcopy(params)))

    def _after(self, model: Any, **_: Any) -> None:
        self._maybe_crash(model.name, "after")

    def _maybe_crash(self, op: str, when: str) -> None:
        if self.crash is not None and self.crash == (op, self.counts.get(op, 0), when):
            self.crash = None
            raise Crash(f"crash {when} {op} #{self.counts[op]}")

    def _health(self, params: dict[str, Any], **_: Any) -> Any:
        group = params["body"]["TargetGroupArn"]
        answers = self.health.get(group)
        if not answers:
            return None
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        parsed = {**copy.deepcopy(answer), "ResponseMetadata": {"HTTPStatusCode": 200}}
        return AWSResponse("https://elasticloadbalancing.amazonaws.com/", 200, {}, None), parsed


@dataclass
class Alb:
    """An ALB in moto with a blue and a green target group of one instance each."""

    elb: Any
    aws: AwsConnection
    lb_arn: str
    blue_tg: str
    green_tg: str
    other_tg: str
    hooks: Hooks

    def client(self) -> Any:
        """Build an elbv2 client for the bot, with the hooks attached."""
        return self.hooks.attach(
            boto3.client("elbv2", region_name=self.aws.region, endpoint_url=self.aws.endpoint_url)
        )

    def listener(self, port: int, actions: list[dict[str, Any]]) -> str:
        """Create a listener on `port` with default `actions`; return its ARN."""
        created = self.elb.create_listener(
            LoadBalancerArn=self.lb_arn, Protocol="HTTP", Port=port, DefaultActions=actions
        )
        return str(created["Listeners"][0]["ListenerArn"])

    def rule(self, listener: str, priority: int, field_: str, value: str, group: str) -> str:
        """Create a rule forwarding `field_ = value` to `group`; return its ARN."""
        key = "HostHeaderConfig" if field_ == "host-header" else "PathPatternConfig"
        condition = {"Field": field_, key: {"Values": [value]}}
        created = self.elb.create_rule(
            ListenerArn=listener,
            Priority=priority,
            Conditions=[condition],
            Actions=[{"Type": "forward", "TargetGroupArn": group}],
        )
        return str(created["Rules"][0]["RuleArn"])

    def defaults(self, listener: str) -> list[dict[str, Any]]:
        """Return a listener's default actions now."""
        found = self.elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]
        return list(found["DefaultActions"])

    def rule_actions(self, rule: str) -> list[dict[str, Any]]:
        """Return a rule's actions now."""
        return list(self.elb.describe_rules(RuleArns=[rule])["Rules"][0]["Actions"])

    def weighted(self, blue: int, green: int) -> list[dict[str, Any]]:
        """Return default actions splitting traffic blue:green."""
        groups = [
            {"TargetGroupArn": self.blue_tg, "Weight": blue},
            {"TargetGroupArn": self.green_tg, "Weight": green},
        ]
        return [{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}]


def forward(group: str, order: int | None = None) -> dict[str, Any]:
    """Return a plain forward action."""
    action: dict[str, Any] = {"Type": "forward", "TargetGroupArn": group}
    return action | ({"Order": order} if order is not None else {})


@pytest.fixture(scope="module")
def image_id(moto_server: str) -> str:
    """Look up an AMI once: moto's image listing is the slowest call here."""
    ec2 = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


@pytest.fixture
def alb(aws: AwsConnection, image_id: str) -> Alb:
    """Build a VPC, two subnets, an ALB, and blue, green and static target groups."""
    ec2 = boto3.client("ec2", region_name=aws.region, endpoint_url=aws.endpoint_url)
    elb = boto3.client("elbv2", region_name=aws.region, endpoint_url=aws.endpoint_url)
    tag = uuid.uuid4().hex[:8]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)
        for i, zone in ((1, "us-east-1a"), (2, "us-east-1b"))
    ]
    lb = elb.create_load_balancer(
        Name=f"lb-{tag}", Subnets=[s["Subnet"]["SubnetId"] for s in subnets]
    )["LoadBalancers"][0]["LoadBalancerArn"]
    groups = [
        elb.create_target_group(Name=f"{name}-{tag}", Protocol="HTTP", Port=80, VpcId=vpc)
        for name in ("blue", "green", "static")
    ]
    blue_tg, green_tg, other_tg = (g["TargetGroups"][0]["TargetGroupArn"] for g in groups)
    instances = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2)["Instances"]
    for group, instance in zip((blue_tg, green_tg), instances, strict=True):
        elb.register_targets(TargetGroupArn=group, Targets=[{"Id": instance["InstanceId"]}])
    return Alb(elb, aws, lb, blue_tg, green_tg, other_tg, Hooks())


class Web:
    """One test's corner of a shared WebStub: its paths carry a unique prefix."""

    def __init__(self, stub: WebStub) -> None:
        self.stub = stub
        self.prefix = f"/{uuid.uuid4().hex[:8]}"
        self.url = stub.url + self.prefix

    def route(self, method: str, path: str, *replies: Reply) -> None:
        """Script `method path` under this test's prefix."""
        self.stub.route(method, self.prefix + path, *replies)

    def calls(self, method: str, path: str) -> list[Request]:
        """Return the requests to `method path` under this test's prefix."""
        return self.stub.calls(method, self.prefix + path)


@pytest.fixture(scope="module")
def stub() -> Iterator[WebStub]:
    """Serve scripted health URLs for the whole module."""
    with WebStub() as server:
        yield server


@pytest.fixture
def web(stub: WebStub) -> Web:
    """Serve healthy blue, green and load-balancer health URLs unless a test re-routes them."""
    corner = Web(stub)
    for path in ("/blue/health", "/green/health", "/lb/health"):
        corner.route("GET", path, Reply(200))
    return corner


def make_target(alb: Alb, web: Web, **overrides: Any) -> BlueGreenTarget:
    """Return a target over every listener of `alb`, health URLs on `web`."""
    fields: dict[str, Any] = {
        "kind": "bluegreen",
        "load_balancer_arn": alb.lb_arn,
        "blue": Side(target_group_arn=alb.blue_tg, health_url=f"{web.url}/blue/health"),
        "green": Side(target_group_arn=alb.green_tg, health_url=f"{web.url}/green/health"),
        "lb_health_url": f"{web.url}/lb/health",
        "aws": alb.aws,
        "verify_timeout": 0.6,
    }
    fields.update(overrides)
    return BlueGreenTarget(BlueGreenParams(**fields), clients=alb.client)


def switch_of(target: BlueGreenTarget, ref: str | None = None, **kwargs: Any) -> SwitchTraffic:
    """Plan `ref` and return its one step."""
    (step,) = target.plan(ref, **kwargs).rollback
    assert isinstance(step, SwitchTraffic)
    return step


def run(step: Any, ctx: StepContext | None = None) -> Any:
    """Run `step` with a context whose deadline is the step's timeout."""
    return step.run(ctx or StepContext.for_test(timeout=step.timeout))


def weighted(alb: Alb, blue: int, green: int) -> list[dict[str, Any]]:
    """Return a weighted forward as the bot sends it (with the stickiness AWS answered)."""
    actions = alb.weighted(blue, green)
    actions[0]["ForwardConfig"]["TargetGroupStickinessConfig"] = {"Enabled": False}
    return actions


# --- 1. the traffic model: every route, only forward weights -----------------------------


def test_host_and_path_rules_forwarding_to_the_bad_group_switch_with_the_default(
    alb: Alb, web: Web
) -> None:
    listener = alb.listener(80, [forward(alb.green_tg)])
    host = alb.rule(listener, 10, "host-header", "api.voxflow.example", alb.green_tg)
    path = alb.rule(listener, 20, "path-pattern", "/v2/*", alb.green_tg)
    static = alb.rule(listener, 30, "path-pattern", "/static/*", alb.other_tg)
    target = make_target(alb, web)
    plan = target.plan(None)
    (step,) = plan.rollback
    assert isinstance(step, SwitchTraffic)
    assert step.to_colour == "blue"
    assert "rule 10 (host-header api.voxflow.example)" in step.describe()
    assert "rule 20 (path-pattern /v2/*)" in step.describe()
    assert any("rule 30" in n and "left alone" in n for n in plan.notes)
    run(step)
    assert alb.hooks.writes == [
        ("ModifyListener", {"ListenerArn": listener, "DefaultActions": [forward(alb.blue_tg)]}),
        ("ModifyRule", {"RuleArn": host, "Actions": [forward(alb.blue_tg)]}),
        ("ModifyRule", {"RuleArn": path, "Actions": [forward(alb.blue_tg)]}),
    ]
    assert alb.rule_actions(static) == [forward(alb.other_tg)]
    assert alb.rule_actions(host) == [forward(alb.blue_tg)]


def test_oidc_listener_keeps_its_authenticate_action_and_redirect_listener_is_left_alone(
    alb: Alb, web: Web
) -> None:
    redirect = alb.listener(80, [{"Type": "redirect", "RedirectConfig": REDIRECT}])
    oidc = {"Type": "authenticate-oidc", "AuthenticateOidcConfig": OIDC, "Order": 1}
    secure = alb.listener(443, [oidc, forward(alb.green_tg, order=2)])
    target = make_target(alb, web)
    plan = target.plan(None)
    assert any("HTTP:80 ends in a redirect action: left alone" in n for n in plan.notes)
    (step,) = plan.rollback
    ctx = StepContext.for_test(timeout=step.timeout)
    run(step, ctx)
    kept = {k: v for k, v in OIDC.items() if k != "ClientSecret"}
    sent_oidc = {**oidc, "AuthenticateOidcConfig": {**kept, "UseExistingClientSecret": True}}
    assert alb.hooks.writes == [
        (
            "ModifyListener",
            {"ListenerArn": secure, "DefaultActions": [sent_oidc, forward(alb.blue_tg, order=2)]},
        )
    ]
    assert alb.defaults(redirect) == [{"Type": "redirect", "RedirectConfig": REDIRECT}]
    assert [a["Type"] for a in alb.defaults(secure)] == ["authenticate-oidc", "forward"]
    assert "s3cret" not in json.dumps(ctx.memory) + json.dumps(step.spec())


def test_two_listeners_switch_together_and_back_after_target_health_fails(
    alb: Alb, web: Web
) -> None:
    plain = alb.listener(80, [forward(alb.green_tg)])
    alt = alb.listener(8443, alb.weighted(0, 1))
    alb.hooks.replay(
        alb.blue_tg,
        health_answer(UNUSED),
        health_answer(INITIAL),
        health_answer(UNHEALTHY),
    )
    step = switch_of(make_target(alb, web))
    with pytest.raises(PermanentError, match=r"Target\.ResponseCodeMismatch.*switched back"):
        run(step)
    assert alb.hooks.writes == [
        ("ModifyListener", {"ListenerArn": plain, "DefaultActions": [forward(alb.blue_tg)]}),
        ("ModifyListener", {"ListenerArn": alt, "DefaultActions": weighted(alb, 1, 0)}),
        ("ModifyListener", {"ListenerArn": plain, "DefaultActions": [forward(alb.green_tg)]}),
        ("ModifyListener", {"ListenerArn": alt, "DefaultActions": weighted(alb, 0, 1)}),
    ]
    assert alb.defaults(plain) == [forward(alb.green_tg)]
    assert web.calls("GET", "/lb/health") == []


def test_switch_goes_back_when_load_balancer_health_fails(alb: Alb, web: Web) -> None:
    listener = alb.listener(80, alb.weighted(20, 80))
    web.route("GET", "/lb/health", Reply(502))
    step = switch_of(make_target(alb, web, stable="blue"))
    with pytest.raises(PermanentError, match=r"answered 502.*switched back listener HTTP:80"):
        run(step)
    assert alb.hooks.writes == [
        ("ModifyListener", {"ListenerArn": listener, "DefaultActions": weighted(alb, 1, 0)}),
        ("ModifyListener", {"ListenerArn": listener, "DefaultActions": weighted(alb, 20, 80)}),
    ]
    weights = alb.defaults(listener)[0]["ForwardConfig"]["TargetGroups"]
    assert [g["Weight"] for g in weights] == [20, 80]
    assert len(web.calls("GET", "/lb/health")) > 1


# --- 2. canary-aware ------------------------------------------------------------------------


def test_canary_90_10_rolls_back_to_the_configured_stable_group(alb: Alb, web: Web) -> None:
    listener = alb.listener(443, alb.weighted(90, 10))
    target = make_target(alb, web, stable="blue")
    chosen = default_point(target.points())
    assert chosen is not None and chosen.ref == "blue"
    step = switch_of(target, chosen.ref)
    assert "because the config names blue as stable" in step.describe()
    result = run(step)
    assert alb.hooks.writes == [
        ("ModifyListener", {"ListenerArn": listener, "DefaultActions": weighted(alb, 1, 0)})
    ]
    assert result.data["to_target_group"] == alb.blue_tg
    assert alb.defaults(listener)[0]["ForwardConfig"]["TargetGroups"][1]["Weight"] == 0


def test_canary_without_a_known_stable_group_is_refused_not_guessed(alb: Alb, web: Web) -> None:
    alb.listener(443, alb.weighted(90, 10))
    target = make_target(alb, web)
    points = target.points()
    assert default_point(points) is None
    assert all("nothing says which colour is stable" in p.avoid for p in points)
    with pytest.raises(PlanningError, match=r"split \(listener HTTP:443: blue 90%, green 10%\)"):
        target.plan(None)
    assert switch_of(target, "blue").to_colour == "blue"


@pytest.mark.parametrize(
    ("tags", "stable", "why"),
    [
        ({"blue": {LAST_HEALTHY_TAG: "2026-11-01T10:00:00+00:00"}}, "blue", "last verified"),
        (
            {
                "blue": {DEPLOYED_AT_TAG: "2026-11-01T10:00:00+00:00"},
                "green": {DEPLOYED_AT_TAG: "2026-11-20T10:00:00+00:00"},
            },
            "blue",
            "older deployment",
        ),
        (
            {
                "blue": {
                    LAST_HEALTHY_TAG: "2026-11-01T10:00:00+00:00",
                    DEPLOYED_AT_TAG: "2026-11-21T10:00:00+00:00",
                },
                "green": {DEPLOYED_AT_TAG: "2026-11-20T10:00:00+00:00"},
            },
            "green",
            "older deployment",
        ),
    ],
)
def test_canary_stable_group_comes_from_the_bots_tags(
    tags: dict[str, dict[str, str]], stable: str, why: str, alb: Alb, web: Web
) -> None:
    alb.listener(443, alb.weighted(90, 10))
    for colour, values in tags.items():
        arn = alb.blue_tg if colour == "blue" else alb.green_tg
        alb.elb.add_tags(
            ResourceArns=[arn], Tags=[{"Key": k, "Value": v} for k, v in values.items()]
        )
    target = make_target(alb, web)
    step = switch_of(target)
    assert step.to_colour == stable and why in step.reason
    canary = "green" if stable == "blue" else "blue"
    assert "against the default" in switch_of(target, canary).reason
    chosen = default_point(target.points())
    assert chosen is not None and chosen.ref == stable


def test_verified_switch_records_the_group_as_last_known_healthy(alb: Alb, web: Web) -> None:
    listener = alb.listener(80, [forward(alb.green_tg)])
    run(switch_of(make_target(alb, web)))
    assert alb.hooks.writes == [
        ("ModifyListener", {"ListenerArn": listener, "DefaultActions": [forward(alb.blue_tg)]})
    ]
    tags = alb.elb.describe_tags(ResourceArns=[alb.blue_tg])["TagDescriptions"][0]["Tags"]
    assert [t["Key"] for t in tags] == [LAST_HEALTHY_TAG]
    alb.elb.modify_listener(ListenerArn=listener, DefaultActions=alb.weighted(90, 10))
    assert switch_of(make_target(alb, web)).to_colour == "blue"


def test_all_traffic_on_one_colour_rolls_back_to_the_idle_one(alb: Alb, web: Web) -> None:
    alb.listener(80, [forward(alb.green_tg)])
    target = make_target(alb, web)
    points = target.points()
    assert [(p.ref, p.is_current, bool(p.avoid)) for p in points] == [
        ("blue", False, False),
        ("green", True, True),
    ]
    with pytest.raises(PlanningError, match="green already takes all traffic"):
        target.plan("green")
    with pytest.raises(PlanningError, match="unknown colour 'purple'"):
        target.plan("purple")


# --- 3. health gates -------------------------------------------------------------------


def test_idle_colour_with_unused_targets_passes_through_its_health_url(alb: Alb, web: Web) -> None:
    listener = alb.listener(80, [forward(alb.green_tg)])
    alb.hooks.replay(
        alb.blue_tg,
        health_answer(UNUSED, UNUSED),
        health_answer(INITIAL, HEALTHY),
        health_answer(HEALTHY, HEALTHY),
    )
    target = make_target(alb, web)
    step = switch_of(target)
    result = run(step)
    assert "2 of 2 targets unused (Target.NotInUse: idle colour)" in result.output
    assert len(web.calls("GET", "/blue/health")) == 1
    assert "2 targets healthy" in result.output
    assert alb.defaults(listener) == [forward(alb.blue_tg)]


def test_idle_colour_is_refused_when_its_health_url_fails_or_is_missing(alb: Alb, web: Web) -> None:
    alb.listener(80, [forward(alb.green_tg)])
    alb.hooks.replay(alb.blue_tg, health_answer(UNUSED))
    web.route("GET", "/blue/health", Reply(503))
    target = make_target(alb, web)
    failed = [c for c in target.checks(None) if not c.ok]
    assert [c.name for c in failed] == [
        "blue health URL passes",
        "blue targets registered and healthy",
    ]
    assert "Target.NotInUse" in failed[1].detail and "answered 503" in failed[1].detail
    with pytest.raises(PermanentError, match="refusing to switch to blue"):
        run(switch_of(target))
    no_url = Side(target_group_arn=alb.blue_tg)
    with pytest.raises(PermanentError, match="no health_url configured for blue"):
        run(switch_of(make_target(alb, web, blue=no_url)))
    assert alb.hooks.writes == []


@pytest.mark.parametrize("state", [DRAINING, UNHEALTHY, INITIAL, UNAVAILABLE], ids=lambda s: s[0])
def test_targets_not_healthy_refuse_with_the_reason_unless_forced(
    state: tuple[str, str, str], alb: Alb, web: Web
) -> None:
    listener = alb.listener(80, [forward(alb.green_tg)])
    alb.hooks.replay(alb.blue_tg, health_answer(HEALTHY, state), health_answer(HEALTHY, HEALTHY))
    target = make_target(alb, web)
    with pytest.raises(PermanentError, match=rf"{state[0]} \({state[1]}"):
        run(switch_of(target))
    assert alb.hooks.writes == []
    forced = switch_of(target, force=True)
    assert "reported, not required (forced)" in forced.describe()
    alb.hooks.replay(alb.blue_tg, health_answer(HEALTHY, state), health_answer(HEALTHY, HEALTHY))
    result = run(forced)
    assert "FAILED: blue targets registered and healthy" in result.output
    assert alb.defaults(listener) == [forward(alb.blue_tg)]


def test_no_registered_targets_is_refused_even_when_forced(alb: Alb, web: Web) -> None:
    alb.listener(80, [forward(alb.green_tg)])
    alb.hooks.replay(alb.blue_tg, health_answer())
    with pytest.raises(PermanentError, match="has no registered targets"):
        run(switch_of(make_target(alb, web), force=True))
    assert alb.hooks.writes == []


# --- 5. resume contract -------------------------------------------------------------------

CRASH_POINTS = [
    (op, n, when)
    for op, n in (("ModifyListener", 1), ("ModifyRule", 1), ("ModifyRule", 2))
    for when in ("before", "after")
]


@pytest.mark.parametrize("crash", CRASH_POINTS, ids=lambda c: f"{c[2]}-{c[0]}-{c[1]}")
def test_switch_interrupted_at_each_write_is_finished_by_the_restored_step(
    crash: tuple[str, int, str], alb: Alb, web: Web
) -> None:
    listener = alb.listener(80, [forward(alb.green_tg)])
    rules = [
        alb.rule(listener, 10, "host-header", "api.voxflow.example", alb.green_tg),
        alb.rule(listener, 20, "path-pattern", "/v2/*", alb.green_tg),
    ]
    target = make_target(alb, web)
    step = switch_of(target)
    ctx = StepContext.for_test(timeout=step.timeout)
    alb.hooks.crash = crash
    with pytest.raises(Crash):
        run(step, ctx)
    again = target.restore(step.name, json.loads(json.dumps(step.spec())))
    result = run(again, ctx)
    assert result.summary == "traffic switched to blue"
    assert alb.defaults(listener) == [forward(alb.blue_tg)]
    assert all(alb.rule_actions(r) == [forward(alb.blue_tg)] for r in rules)
    arns = [p.get("ListenerArn") or p.get("RuleArn") for p in alb.hooks.sent()]
    assert sorted(arns) == sorted([listener, *rules])
    done = run(target.restore(step.name, step.spec()), ctx)
    assert done.skipped and done.summary == "already switched to blue and verified"


@pytest.mark.parametrize("when", ["before", "after"])
def test_switch_back_interrupted_is_finished_by_the_restored_step(
    when: str, alb: Alb, web: Web
) -> None:
    first = alb.listener(80, [forward(alb.green_tg)])
    second = alb.listener(8443, [forward(alb.green_tg)])
    web.route("GET", "/lb/health", Reply(503))
    target = make_target(alb, web)
    step = switch_of(target)
    ctx = StepContext.for_test(timeout=step.timeout)
    alb.hooks.crash = ("ModifyListener", 3, when)
    with pytest.raises(Crash):
        run(step, ctx)
    assert ctx.memory[memory_key(target.params)]["phase"] == "switching_back"
    with pytest.raises(PermanentError, match=r"answered 503.*switched back"):
        run(target.restore(step.name, step.spec()), ctx)
    assert alb.defaults(first) == alb.defaults(second) == [forward(alb.green_tg)]
    assert len(alb.hooks.sent()) == 4


def test_listener_changed_after_approval_is_not_switched(alb: Alb, web: Web) -> None:
    listener = alb.listener(80, alb.weighted(10, 90))
    step = switch_of(make_target(alb, web, stable="blue"))
    alb.elb.modify_listener(ListenerArn=listener, DefaultActions=alb.weighted(50, 50))
    with pytest.raises(PermanentError, match="changed since the plan was approved"):
        run(step)
    assert alb.hooks.writes == []


def test_route_changed_by_someone_else_mid_switch_stops_the_resume(alb: Alb, web: Web) -> None:
    listener = alb.listener(80, [forward(alb.green_tg)])
    rule = alb.rule(listener, 10, "host-header", "api.voxflow.example", alb.green_tg)
    target = make_target(alb, web)
    step = switch_of(target)
    ctx = StepContext.for_test(timeout=step.timeout)
    alb.hooks.crash = ("ModifyRule", 1, "before")
    with pytest.raises(Crash):
        run(step, ctx)
    alb.elb.modify_rule(RuleArn=rule, Actions=[forward(alb.other_tg)])
    with pytest.raises(PermanentError, match=r"rule 10 .* changed by someone else"):
        run(target.restore(step.name, step.spec()), ctx)
    assert alb.rule_actions(rule) == [forward(alb.other_tg)]


def test_restore_traffic_puts_recorded_routes_back_once(alb: Alb, web: Web) -> None:
    listener = alb.listener(80, alb.weighted(10, 90))
    target = make_target(alb, web, stable="blue")
    result = run(switch_of(target))
    routes = [Route.from_json(r) for r in result.data["previous_routes"]]
    undo = RestoreTraffic(target.params, target.clients, routes=routes)
    assert "listener HTTP:80 to blue 10%, green 90%" in undo.describe()
    restored = target.restore(undo.name, undo.spec())
    assert run(restored).summary == "restored 1 of 1 routes"
    weights = alb.defaults(listener)[0]["ForwardConfig"]["TargetGroups"]
    assert [g["Weight"] for g in weights] == [10, 90]
    assert run(restored).summary == "already restored: every route forwards as recorded"
    with pytest.raises(PlanningError, match=r"no step 'loadbalancer\.nope'"):
        target.restore("loadbalancer.nope", {})


def test_named_listener_only_is_switched_and_unknown_listener_is_a_planning_error(
    alb: Alb, web: Web
) -> None:
    named = alb.listener(80, [forward(alb.green_tg)])
    other = alb.listener(8080, [forward(alb.green_tg)])
    target = make_target(alb, web, load_balancer_arn=None, listener_arn=named)
    run(switch_of(target))
    assert alb.defaults(named) == [forward(alb.blue_tg)]
    assert alb.defaults(other) == [forward(alb.green_tg)]
    missing = make_target(alb, web, load_balancer_arn=None, listener_arns=[named + "0"])
    with pytest.raises(PlanningError, match="ListenerNotFound"):
        missing.plan(None)


def test_a_forced_switch_to_a_colour_with_one_of_three_targets_unhealthy_says_so(
    alb: Alb, web: Web
) -> None:
    listener = alb.listener(80, alb.weighted(10, 90))
    one_bad = health_answer(HEALTHY, HEALTHY, UNHEALTHY)
    alb.hooks.replay(alb.blue_tg, one_bad)
    target = make_target(alb, web, stable="blue")
    failing = (
        f"blue targets registered and healthy fails: blue-{alb.blue_tg.split('/blue-')[1][:8]}: "
        "1 of 3 targets not healthy: i-0abc000000000002:80 unhealthy "
        "(Target.ResponseCodeMismatch Health checks failed with these codes: [502])"
    )
    (gate,) = [c for c in target.checks(None) if not c.ok]
    assert f"{gate.name} fails: {gate.detail}" == failing  # the verdict's finding
    with pytest.raises(PermanentError, match=r"refusing to switch to blue: .*1 of 3 targets"):
        run(switch_of(target))
    plan = target.plan(None, force=True)
    assert f"traffic goes to blue although {failing}" in plan.notes[-1]
    (step,) = plan.rollback
    assert f"forced although blue's pre-switch health fails: {failing}" in step.describe()
    restored = target.restore(step.name, step.spec())
    assert isinstance(restored, SwitchTraffic) and restored.describe() == step.describe()
    alb.hooks.replay(alb.blue_tg, one_bad, health_answer(HEALTHY, HEALTHY, HEALTHY))
    result = run(step)
    assert result.summary.startswith(
        "traffic switched to blue (forced past failing pre-switch health: "
        "blue targets registered and healthy: "
    )
    assert "1 of 3 targets not healthy: i-0abc000000000002:80 unhealthy" in result.summary
    assert (
        "FAILED: blue targets registered and healthy: " in result.output
        and "(forced: switching anyway)" in result.output
    )
    assert alb.defaults(listener) == weighted(alb, 1, 0)


# --- 5. what runs now: a colour runs only when its targets are healthy -------------------


def test_the_live_colour_runs_only_when_all_its_targets_are_healthy(alb: Alb, web: Web) -> None:
    alb.listener(80, [forward(alb.green_tg)])
    target = make_target(alb, web)
    alb.hooks.replay(alb.green_tg, health_answer(HEALTHY, HEALTHY))
    (live,) = [p for p in target.points() if p.is_current]
    assert (live.ref, live.unready) == ("green", "")
    alb.hooks.replay(alb.green_tg, health_answer(HEALTHY, UNHEALTHY, INITIAL))
    (live,) = [p for p in target.points() if p.is_current]
    group = alb.green_tg.split("/")[1]
    assert live.unready == (
        f"2 of its 3 targets in {group} not healthy: i-0abc000000000001:80 unhealthy "
        "(Target.ResponseCodeMismatch Health checks failed with these codes: [502]); "
        "i-0abc000000000002:80 initial (Elb.InitialHealthChecking Initial health checks "
        "in progress)"
    )
    alb.hooks.replay(alb.green_tg, health_answer())
    (live,) = [p for p in target.points() if p.is_current]
    assert live.unready == f"{group} has no registered targets"


DENIED = "elasticloadbalancing:DescribeTargetHealth"


def test_the_live_colour_whose_target_health_cannot_be_read_says_so(alb: Alb, web: Web) -> None:
    alb.listener(80, [forward(alb.green_tg)])

    def denied(**_: Any) -> Any:
        """DescribeTargetHealth refused as IAM refuses it (an error shape with HTTP 403)."""
        error = {
            "Code": "AccessDenied",
            "Message": f"User is not authorized to perform: {DENIED}",
        }
        parsed = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse("https://elasticloadbalancing.amazonaws.com/", 403, {}, None), parsed

    def clients() -> Any:
        client = alb.client()
        client.meta.events.register(f"before-call.{SERVICE}.DescribeTargetHealth", denied)
        return client

    target = make_target(alb, web)
    target.clients = clients
    (live,) = [p for p in target.points() if p.is_current]
    group = alb.green_tg.split("/")[1]
    assert live.unready == (
        f"its target health could not be read (describe target health of {group}: "
        f"AccessDenied: User is not authorized to perform: {DENIED})"
    )


def test_the_wait_for_a_colours_health_says_how_many_targets_are_healthy(alb: Alb) -> None:
    one_bad = health_answer(HEALTHY, HEALTHY, UNHEALTHY)
    alb.hooks.replay(alb.blue_tg, one_bad, one_bad, health_answer(HEALTHY, HEALTHY, HEALTHY))
    said: list[str] = []
    with voice.speaking_to(said.append):
        settled = await_healthy(alb.client(), alb.blue_tg, deadline=time.monotonic() + 30)
    assert settled.ok and settled.polls == 3, settled
    assert len(said) == 2 and all(line.endswith(": 2 of 3 targets healthy") for line in said)
