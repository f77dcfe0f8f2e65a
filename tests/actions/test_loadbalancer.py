"""Blue-green switching against a real ALB API (moto's server) and scripted health URLs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from actions.base import PermanentError, PlanningError, StepContext
from actions.loadbalancer import (
    BlueGreenParams,
    BlueGreenTarget,
    RestoreListener,
    Side,
    SwitchListener,
)
from actions.params import AwsConnection
from bot.sandbox.web import Reply, Request, WebStub

pytest_plugins = ["tests.fakes.aws"]


@dataclass
class Alb:
    """An ALB in moto with a blue and a green target group, one instance each."""

    elb: Any
    ec2: Any
    aws: AwsConnection
    listener_arn: str
    blue_tg: str
    green_tg: str
    blue_instance: str
    green_instance: str

    def forwards_to(self) -> dict[str, int]:
        """Return {target group ARN: weight} of the listener's forward action now."""
        listener = self.elb.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"][0]
        action = listener["DefaultActions"][0]
        if "ForwardConfig" in action:
            groups = action["ForwardConfig"]["TargetGroups"]
            return {g["TargetGroupArn"]: g["Weight"] for g in groups}
        return {action["TargetGroupArn"]: 1}

    def weighted(self, blue: int, green: int) -> list[dict[str, Any]]:
        """Return default actions splitting traffic blue:green."""
        groups = [
            {"TargetGroupArn": self.blue_tg, "Weight": blue},
            {"TargetGroupArn": self.green_tg, "Weight": green},
        ]
        return [{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}]


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
    """Build a VPC, two subnets, an ALB, blue and green groups and a listener on green."""
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
        elb.create_target_group(Name=f"{colour}-{tag}", Protocol="HTTP", Port=80, VpcId=vpc)
        for colour in ("blue", "green")
    ]
    blue_tg, green_tg = (g["TargetGroups"][0]["TargetGroupArn"] for g in groups)
    instances = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2)["Instances"]
    blue_i, green_i = (i["InstanceId"] for i in instances)
    elb.register_targets(TargetGroupArn=blue_tg, Targets=[{"Id": blue_i}])
    elb.register_targets(TargetGroupArn=green_tg, Targets=[{"Id": green_i}])
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": green_tg}],
    )["Listeners"][0]["ListenerArn"]
    return Alb(elb, ec2, aws, listener, blue_tg, green_tg, blue_i, green_i)


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
    """Serve scripted health URLs for the whole module (stopping a server takes 0.5 s)."""
    with WebStub() as server:
        yield server


@pytest.fixture
def web(stub: WebStub) -> Web:
    """Serve healthy blue, green and load-balancer health URLs unless a test re-routes them."""
    corner = Web(stub)
    for path in ("/blue/health", "/green/health", "/lb/health"):
        corner.route("GET", path, Reply(200))
    return corner


def make_params(alb: Alb, web: Web, **overrides: Any) -> BlueGreenParams:
    """Return params for `alb` with health URLs on `web` and a short verify timeout."""
    fields: dict[str, Any] = {
        "kind": "bluegreen",
        "listener_arn": alb.listener_arn,
        "blue": Side(target_group_arn=alb.blue_tg, health_url=f"{web.url}/blue/health"),
        "green": Side(target_group_arn=alb.green_tg, health_url=f"{web.url}/green/health"),
        "lb_health_url": f"{web.url}/lb/health",
        "aws": alb.aws,
        "verify_timeout": 0.6,
    }
    fields.update(overrides)
    return BlueGreenParams(**fields)


def run_step(step: Any, ctx: StepContext | None = None) -> Any:
    """Run `step` with a context whose deadline is the step's timeout."""
    return step.run(ctx or StepContext.for_test(timeout=step.timeout))


def test_points_mark_the_colour_the_listener_forwards_to(alb: Alb, web: Web) -> None:
    points = BlueGreenTarget(make_params(alb, web)).points()
    assert [(p.ref, p.is_current) for p in points] == [("blue", False), ("green", True)]
    assert "100% of traffic" in points[1].label


def test_switch_moves_traffic_to_the_inactive_colour_and_records_previous_actions(
    alb: Alb, web: Web
) -> None:
    plan = BlueGreenTarget(make_params(alb, web)).plan(None)
    (step,) = plan.rollback
    assert isinstance(step, SwitchListener)
    assert alb.green_tg in step.describe() and alb.blue_tg in step.describe()
    ctx = StepContext.for_test(timeout=step.timeout)
    result = run_step(step, ctx)
    assert alb.forwards_to() == {alb.blue_tg: 1}
    assert result.data["previous_actions"][0]["TargetGroupArn"] == alb.green_tg
    assert (
        ctx.memory[f"loadbalancer.previous_actions:{alb.listener_arn}"]
        == (result.data["previous_actions"])
    )
    assert len(web.calls("GET", "/lb/health")) == 1


def test_weighted_forward_counts_the_heaviest_group_as_active(alb: Alb, web: Web) -> None:
    alb.elb.modify_listener(ListenerArn=alb.listener_arn, DefaultActions=alb.weighted(90, 10))
    target = BlueGreenTarget(make_params(alb, web))
    points = target.points()
    assert [(p.ref, p.is_current) for p in points] == [("blue", True), ("green", False)]
    assert "90% of traffic" in points[0].label
    (step,) = target.plan(None).rollback
    assert isinstance(step, SwitchListener)
    assert (step.from_colour, step.to_colour) == ("blue", "green")


def test_even_split_needs_an_explicit_colour(alb: Alb, web: Web) -> None:
    alb.elb.modify_listener(ListenerArn=alb.listener_arn, DefaultActions=alb.weighted(50, 50))
    target = BlueGreenTarget(make_params(alb, web))
    with pytest.raises(PlanningError, match="split evenly"):
        target.plan(None)
    (step,) = target.plan("green").rollback
    run_step(step)
    assert alb.forwards_to() == {alb.green_tg: 1}


def test_plan_refuses_the_active_colour_and_unknown_colours(alb: Alb, web: Web) -> None:
    target = BlueGreenTarget(make_params(alb, web))
    with pytest.raises(PlanningError, match="green is already active"):
        target.plan("green")
    with pytest.raises(PlanningError, match="unknown colour 'purple'"):
        target.plan("purple")


def test_switch_refuses_when_a_target_instance_is_stopped(alb: Alb, web: Web) -> None:
    alb.ec2.stop_instances(InstanceIds=[alb.blue_instance])
    (step,) = BlueGreenTarget(make_params(alb, web)).plan("blue").rollback
    with pytest.raises(PermanentError, match=rf"refusing to switch to blue.*{alb.blue_instance}"):
        run_step(step)
    assert alb.forwards_to() == {alb.green_tg: 1}


def test_switch_refuses_when_no_target_is_registered(alb: Alb, web: Web) -> None:
    alb.elb.deregister_targets(TargetGroupArn=alb.blue_tg, Targets=[{"Id": alb.blue_instance}])
    (step,) = BlueGreenTarget(make_params(alb, web)).plan("blue").rollback
    with pytest.raises(PermanentError, match="has no targets"):
        run_step(step)
    assert alb.forwards_to() == {alb.green_tg: 1}


def test_switch_refuses_when_target_health_url_fails(alb: Alb, web: Web) -> None:
    web.route("GET", "/blue/health", Reply(503))
    target = BlueGreenTarget(make_params(alb, web))
    failed = [c for c in target.checks(None) if not c.ok]
    assert [c.name for c in failed] == ["blue health URL passes"]
    (step,) = target.plan(None).rollback
    with pytest.raises(PermanentError, match=r"blue health URL passes: .* answered 503"):
        run_step(step)
    assert alb.forwards_to() == {alb.green_tg: 1}


def test_forced_switch_goes_ahead_despite_unhealthy_target(alb: Alb, web: Web) -> None:
    web.route("GET", "/blue/health", Reply(503))
    plan = BlueGreenTarget(make_params(alb, web)).plan("blue", force=True)
    (step,) = plan.rollback
    assert "forced" in step.describe()
    result = run_step(step)
    assert alb.forwards_to() == {alb.blue_tg: 1}
    assert "FAILED: blue health URL passes" in result.output


def test_switch_goes_back_when_load_balancer_health_fails(alb: Alb, web: Web) -> None:
    alb.elb.modify_listener(ListenerArn=alb.listener_arn, DefaultActions=alb.weighted(20, 80))
    web.route("GET", "/lb/health", Reply(502))
    (step,) = BlueGreenTarget(make_params(alb, web)).plan(None).rollback
    with pytest.raises(PermanentError, match=r"answered 502.*switched back to green"):
        run_step(step)
    assert alb.forwards_to() == {alb.blue_tg: 20, alb.green_tg: 80}
    assert len(web.calls("GET", "/lb/health")) > 1


def test_switch_goes_back_at_once_when_the_load_balancer_health_url_is_unusable(
    alb: Alb, web: Web
) -> None:
    params = make_params(alb, web, lb_health_url="ftp://lb.internal/health", verify_timeout=30.0)
    (step,) = BlueGreenTarget(params).plan(None).rollback
    with pytest.raises(PermanentError, match=r"bad URL.*switched back to green"):
        run_step(step)
    assert alb.forwards_to() == {alb.green_tg: 1}


def test_load_balancer_health_recovering_within_the_budget_passes(alb: Alb, web: Web) -> None:
    web.route("GET", "/lb/health", Reply(503), Reply(503), Reply(200))
    params = make_params(alb, web, verify_timeout=5.0)
    (step,) = BlueGreenTarget(params).plan(None).rollback
    result = run_step(step)
    assert alb.forwards_to() == {alb.blue_tg: 1}
    assert "verified" in result.output
    assert len(web.calls("GET", "/lb/health")) == 3


def test_resumed_switch_keeps_the_originally_recorded_actions(alb: Alb, web: Web) -> None:
    original = alb.weighted(30, 70)
    alb.elb.modify_listener(ListenerArn=alb.listener_arn, DefaultActions=original)
    (step,) = BlueGreenTarget(make_params(alb, web)).plan(None).rollback
    ctx = StepContext.for_test(timeout=step.timeout)
    run_step(step, ctx)
    again = run_step(step, ctx)
    assert "already forwards to blue" in again.output
    assert again.data["previous_actions"][0]["ForwardConfig"]["TargetGroups"][1]["Weight"] == 70


def test_restore_listener_undoes_a_switch_with_its_recorded_actions(alb: Alb, web: Web) -> None:
    alb.elb.modify_listener(ListenerArn=alb.listener_arn, DefaultActions=alb.weighted(10, 90))
    params = make_params(alb, web)
    (step,) = BlueGreenTarget(params).plan(None).rollback
    result = run_step(step)
    undo = RestoreListener(params, actions=result.data["previous_actions"])
    assert "weight 90" in undo.describe()
    assert run_step(undo).summary == "listener restored to green"
    assert alb.forwards_to() == {alb.blue_tg: 10, alb.green_tg: 90}


def test_unknown_listener_is_a_planning_error_with_aws_message(alb: Alb, web: Web) -> None:
    params = make_params(alb, web, listener_arn=alb.listener_arn + "0")
    with pytest.raises(PlanningError, match="ListenerNotFound: The specified listener"):
        BlueGreenTarget(params).plan(None)
