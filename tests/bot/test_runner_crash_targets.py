"""SIGKILL a real runner process at every step boundary of each target kind's rollback.

The harness is tests/fakes/crash.py: a child process runs the approved plan and
SIGKILLs itself at a kill point; this process lets its lease lapse and a second
runner finishes the run. The systems are real or the project's stand-ins, each
started once per module and shared (every test works on names of its own):
the Kubernetes stand-in API server (sandbox/kubernetes, with a worker
Deployment), the blue-green switch against moto's server, and the maintenance
and health endpoints on a local HTTP server (the sandbox's WebStub). The
config-file and scripted targets are covered in test_runner_crash.py.

Kill points, per kind: `saved` after every step (every step boundary) and
`returned` inside every step (its work done on the system, its result not
recorded: the point where a step not safe to repeat would run twice). The side
effects that are not safe to repeat are counted on the system itself: the PATCH
requests the API server received for the rolled-back Deployment, moto's
ModifyListener calls, the Docker containers the engine created, the maintenance
toggles the HTTP server received.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.elbv2.models import ELBv2Backend

from bot.persistence.models import Run
from bot.persistence.store import Store
from sandbox.kubernetes import FakeKubernetes
from sandbox.web import Reply, WebStub
from tests.fakes.config import config_dict
from tests.fakes.crash import CrashCase, CrashChildren
from tests.fakes.docker_apps import APP as DOCKER_APP
from tests.fakes.docker_apps import app as docker_app
from tests.fakes.docker_apps import containers_named as docker_containers_named
from tests.fakes.docker_apps import version_served as docker_version_served
from tests.fakes.pg import HOST as PG_HOST
from tests.fakes.pg import PORT as PG_PORT
from tests.fakes.pg import USER as PG_USER
from tests.fakes.pg import dump as pg_dump
from tests.fakes.pg import execute, pg, scalar

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.aws", "tests.fakes.crash", "tests.fakes.dockerd", "tests.fakes.pg"]


@pytest.fixture(scope="module")
def stub() -> Iterator[WebStub]:
    """One HTTP server for the module; each test routes paths under a prefix of its own."""
    with WebStub() as server:
        yield server


class Web:
    """One test's maintenance and health endpoints on the shared server."""

    def __init__(self, stub: WebStub) -> None:
        self.stub = stub
        self.prefix = f"/{uuid.uuid4().hex[:8]}"
        self.url = stub.url + self.prefix
        stub.route("POST", f"{self.prefix}/maintenance", Reply(200, json={"ok": True}))
        stub.route("GET", f"{self.prefix}/health", Reply(200, body=b"ok"))

    def toggles(self) -> list[bool]:
        """The maintenance states asked for, in order."""
        return [
            bool(r.json()["enabled"]) for r in self.stub.calls("POST", f"{self.prefix}/maintenance")
        ]


@pytest.fixture
def web(stub: WebStub) -> Web:
    return Web(stub)


def env_config(web: Web, target: dict[str, Any]) -> dict[str, Any]:
    raw = config_dict(maintenance={"url": f"{web.url}/maintenance"}, health_url=f"{web.url}/health")
    raw["environments"]["prod"]["targets"] = {"app": target}
    return raw


def always_steps_ran(store: Store, run: Run) -> None:
    records = {r.position: r.state for r in store.steps.of(run.id)}
    for step in run.plan:
        if step["always"]:
            assert records.get(step["position"]) in ("succeeded", "skipped"), (step, records)


def outcome_names_what_ran(store: Store, run: Run) -> None:
    """The outcome of a finished run names the steps found already done, and nothing as not run."""
    assert "Not run" not in run.outcome, run.outcome
    for record in store.steps.of(run.id):
        if record.state == "skipped":
            assert f"{record.position + 1}. {record.name} (" in run.outcome, run.outcome
    if all(r.state == "succeeded" for r in store.steps.of(run.id)):
        assert run.outcome == "rollback completed; all steps succeeded"


def resumed_main_step_found_its_work_done(
    store: Store, run: Run, kill: tuple[str, int], main: int
) -> None:
    """Killed after the main step's work, the second runner skips it as already done."""
    if kill == ("returned", main):
        record = next(r for r in store.steps.of(run.id) if r.position == main)
        assert record.state == "skipped" and "already" in record.summary, record
    events = [e.kind for e in store.events.of(run.incident_id)]
    assert events.count("run.resumed") == 1, events


def maintenance_ended_off(web: Web, run: Run, kill: tuple[str, int]) -> None:
    """On first, off last; each toggled once, twice only where the bot died inside that step."""
    toggles = web.toggles()
    assert toggles and toggles[0] is True and toggles[-1] is False, toggles
    at = {s["name"]: s["position"] for s in run.plan}
    on_again = kill == ("returned", at["http.maintenance_on"])
    off_again = kill == ("returned", at["http.maintenance_off"])
    assert toggles.count(True) == 1 + on_again, toggles
    assert toggles.count(False) == 1 + off_again, toggles


def kill_points(steps: int) -> list[tuple[str, int]]:
    """Every step boundary (`saved`), and inside every step after its work (`returned`).

    `started` at a step leaves the systems as `saved` at the step before does
    (only the step's record differs, which test_runner_crash.py covers for
    every point), so it is left out here to keep the module's run time bounded.
    """
    return [(kind, position) for position in range(steps) for kind in ("returned", "saved")]


def point_id(kill: tuple[str, int]) -> str:
    return f"{kill[0]}-{kill[1]}"


# --- Kubernetes: maintenance on, stop workers, undo, rollout status, health,
# maintenance off, start workers


KUBE_STEPS = 7
KUBE_UNDO = 2


class Cluster:
    """The stand-in API server, recording every PATCH it answers (dry runs left out)."""

    def __init__(self, fake: FakeKubernetes, kubeconfig: Path) -> None:
        self.fake = fake
        self.kubeconfig = kubeconfig
        self.patches: list[str] = []
        self._lock = threading.Lock()
        handle = fake.api.handle

        def recording(request: Any) -> Any:
            # a dry run (the verdict's check of the undo) changes nothing: not counted
            if request.method == "PATCH" and "dryRun" not in request.query:
                with self._lock:
                    self.patches.append(request.path)
            return handle(request)

        fake.api.handle = recording  # type: ignore[method-assign]

    def patched(self, namespace: str, name: str) -> int:
        """How many PATCH requests reached deployment `name` in `namespace`."""
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        with self._lock:
            return sum(1 for p in self.patches if p == path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    fake = FakeKubernetes(ready_delay=0.0).start()
    folder = tmp_path_factory.mktemp("kube")
    kubeconfig = fake.write_kubeconfig(folder / "kubeconfig")
    yield Cluster(fake, kubeconfig)
    fake.stop()


@pytest.mark.parametrize("kill", kill_points(KUBE_STEPS), ids=point_id)
def test_a_killed_kubernetes_rollback_is_finished_by_a_second_runner(
    tmp_path: Path,
    cluster: Cluster,
    web: Web,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    cluster.fake.add_deployment(
        namespace, "api", images=["voxflow/api:v1", "voxflow/api:v2", "voxflow/api:v3"]
    )
    cluster.fake.add_deployment(namespace, "worker", images=["voxflow/worker:v1"], replicas=2)
    target = {
        "kind": "kubernetes",
        "namespace": namespace,
        "deployment": "api",
        "workers": ["worker"],
        "connection": {"kubeconfig": str(cluster.kubeconfig), "context": "sandbox"},
        "gitops_guard": False,
    }
    case = CrashCase(config=env_config(web, target), point="1")
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    assert len(final.plan) == KUBE_STEPS, [s["name"] for s in final.plan]
    assert final.plan[KUBE_UNDO]["name"] == "kubernetes.rollout_undo"
    assert final.state == "succeeded", final.outcome
    always_steps_ran(store, final)
    outcome_names_what_ran(store, final)
    maintenance_ended_off(web, final, kill)
    resumed_main_step_found_its_work_done(store, final, kill, KUBE_UNDO)
    assert cluster.patched(namespace, "api") == 1  # the undo reached the cluster once
    api = cluster.fake.store.get("deployments", namespace, "api")
    images = [c["image"] for c in api["spec"]["template"]["spec"]["containers"]]
    assert images == ["voxflow/api:v1"]
    worker = cluster.fake.store.get("deployments", namespace, "worker")
    assert worker["spec"]["replicas"] == 2  # workers back, whatever step the bot died in


# --- blue-green switch against moto's ALB API: maintenance on, switch traffic,
# health, maintenance off


LB_STEPS = 4
LB_SWITCH = 1


class Balancer:
    """One ALB with blue and green target groups in moto, counting ModifyListener calls."""

    def __init__(self, endpoint: str, image_id: str) -> None:
        self.endpoint = endpoint
        self.elb = boto3.client("elbv2", region_name="us-east-1", endpoint_url=endpoint)
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)
        tag = uuid.uuid4().hex[:8]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)
            for i, zone in ((1, "us-east-1a"), (2, "us-east-1b"))
        ]
        self.lb_arn = self.elb.create_load_balancer(
            Name=f"lb-{tag}", Subnets=[s["Subnet"]["SubnetId"] for s in subnets]
        )["LoadBalancers"][0]["LoadBalancerArn"]
        groups = [
            self.elb.create_target_group(Name=f"{c}-{tag}", Protocol="HTTP", Port=80, VpcId=vpc)
            for c in ("blue", "green")
        ]
        self.blue, self.green = (g["TargetGroups"][0]["TargetGroupArn"] for g in groups)
        instances = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2)["Instances"]
        for group, instance in zip((self.blue, self.green), instances, strict=True):
            self.elb.register_targets(
                TargetGroupArn=group, Targets=[{"Id": instance["InstanceId"]}]
            )
        self.modified: list[str] = []
        self._port = 8000

    def listener_to_green(self) -> str:
        """A new listener (a port of its own) forwarding everything to green."""
        self._port += 1
        created = self.elb.create_listener(
            LoadBalancerArn=self.lb_arn,
            Protocol="HTTP",
            Port=self._port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.green}],
        )
        return str(created["Listeners"][0]["ListenerArn"])

    def forwards_to(self, listener: str) -> list[str]:
        found = self.elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]
        return [a.get("TargetGroupArn", "") for a in found["DefaultActions"]]


@pytest.fixture(scope="module")
def balancer(moto_server: str) -> Iterator[Balancer]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server)
        image = str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
        lb = Balancer(moto_server, image)
        # moto's server runs in this process: count the ModifyListener calls it serves
        real = ELBv2Backend.modify_listener

        def counting(backend: ELBv2Backend, arn: str, *args: Any, **kwargs: Any) -> Any:
            lb.modified.append(arn)
            return real(backend, arn, *args, **kwargs)

        env.setattr(ELBv2Backend, "modify_listener", counting)
        yield lb


@pytest.mark.parametrize("kill", kill_points(LB_STEPS), ids=point_id)
def test_a_killed_blue_green_switch_is_finished_by_a_second_runner(
    tmp_path: Path,
    balancer: Balancer,
    web: Web,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    listener = balancer.listener_to_green()
    for colour in ("blue", "green", "lb"):
        web.stub.route("GET", f"{web.prefix}/{colour}/health", Reply(200))
    target = {
        "kind": "bluegreen",
        "listener_arn": listener,
        "blue": {"target_group_arn": balancer.blue, "health_url": f"{web.url}/blue/health"},
        "green": {"target_group_arn": balancer.green, "health_url": f"{web.url}/green/health"},
        "lb_health_url": f"{web.url}/lb/health",
        "aws": {"region": "us-east-1", "endpoint_url": balancer.endpoint},
        "verify_timeout": 5.0,
    }
    case = CrashCase(config=env_config(web, target), point="blue")
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    assert len(final.plan) == LB_STEPS, [s["name"] for s in final.plan]
    assert final.plan[LB_SWITCH]["name"] == "loadbalancer.switch_traffic"
    assert final.state == "succeeded", final.outcome
    always_steps_ran(store, final)
    outcome_names_what_ran(store, final)
    maintenance_ended_off(web, final, kill)
    resumed_main_step_found_its_work_done(store, final, kill, LB_SWITCH)
    assert balancer.forwards_to(listener) == [balancer.blue]
    assert balancer.modified.count(listener) == 1  # switched once, even when killed mid-way


# --- Docker against a real engine: maintenance on, swap the container, health,
# maintenance off


DOCKER_STEPS = 4
DOCKER_SWAP = 1


def containers_created(engine: Engine, name: str, since: float, *, besides: str) -> int:
    """How many containers named `name`, other than `besides`, the engine's event log has."""
    events = engine.call(
        "GET",
        "/events",
        params={
            "since": str(int(since)),
            "until": str(int(time.time()) + 1),
            "filters": json.dumps({"type": ["container"], "event": ["create"]}),
        },
    )
    lines = [json.loads(line) for line in events.text.splitlines() if line.strip()]
    return sum(
        1 for e in lines if e["Actor"]["Attributes"].get("name") == name and e["id"] != besides
    )


@pytest.mark.parametrize("kill", kill_points(DOCKER_STEPS), ids=point_id)
def test_a_killed_docker_rollback_is_finished_by_a_second_runner(
    tmp_path: Path,
    dockerd: Engine,
    web: Web,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    name, port = docker_app(dockerd, "v2")
    old_id = dockerd.inspect(name)["Id"]
    since = time.time() - 5
    target = {
        "kind": "docker",
        "container": name,
        "image": DOCKER_APP,
        "socket": dockerd.socket,
        "settle": 0.5,
        "health_timeout": 20.0,
        "stop_timeout": 0,
        "keep_retired": 1,
    }
    case = CrashCase(config=env_config(web, target), point="v1")
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    assert len(final.plan) == DOCKER_STEPS, [s["name"] for s in final.plan]
    assert final.plan[DOCKER_SWAP]["name"].startswith("docker.")
    assert final.state == "succeeded", final.outcome
    always_steps_ran(store, final)
    outcome_names_what_ran(store, final)
    maintenance_ended_off(web, final, kill)
    resumed_main_step_found_its_work_done(store, final, kill, DOCKER_SWAP)
    running = dockerd.inspect(name)
    assert running["Config"]["Image"] == f"{DOCKER_APP}:v1" and running["State"]["Running"]
    assert docker_version_served(port) == "v1"
    assert (
        containers_created(dockerd, name, since, besides=old_id) == 1
    )  # one new container, however killed
    kept = docker_containers_named(dockerd, f"{name}-rollback-")
    assert len(kept) == 1 and dockerd.inspect(kept[0])["Id"] == old_id


# --- database backup rollback on the real PostgreSQL: restore into a recovery
# database and verify it (the stage, before maintenance), maintenance on, swap,
# verify the live one, health, maintenance off, then the dump of what was set aside


def databases_like(prefix: str) -> list[str]:
    with pg() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
        ).fetchall()
    return sorted(str(r[0]) for r in rows)


DATABASE_STEPS = 8
DATABASE_SWAP = 3


@pytest.mark.postgres
@pytest.mark.parametrize("kill", kill_points(DATABASE_STEPS), ids=point_id)
def test_a_killed_database_rollback_is_finished_by_a_second_runner(
    tmp_path: Path,
    voxflow_db: str,
    web: Web,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    good = pg_dump(voxflow_db, backups, datetime.now(UTC) - timedelta(hours=1))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('late@example.com')")
    target = {
        "kind": "database",
        "connection": {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "dbname": voxflow_db},
        "backups": str(backups),
        "restore_timeout": 60.0,
        "swap_timeout": 20.0,
    }
    case = CrashCase(config=env_config(web, target), point=f"backup:{good}")
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    names = [s["name"] for s in final.plan]
    assert len(final.plan) == DATABASE_STEPS, names
    assert final.state == "succeeded", final.outcome
    always_steps_ran(store, final)
    outcome_names_what_ran(store, final)
    maintenance_ended_off(web, final, kill)
    resumed_main_step_found_its_work_done(store, final, kill, DATABASE_SWAP)
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3  # the dump's rows
    (aside,) = databases_like(f"{voxflow_db}_pre_rollback_")  # swapped once, however killed
    assert scalar(aside, "SELECT count(*) FROM users") == 4
    assert not databases_like(f"{voxflow_db}_recovery")
    own_dumps = [p.name for p in backups.iterdir() if p != good]  # no partial file left
    assert own_dumps == [f"pre_rollback_{voxflow_db}_{aside.rsplit('_pre_rollback_')[1]}.dump"]
