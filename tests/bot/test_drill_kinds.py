"""Drills of Docker, configuration and load-balancer targets: rolled back and forward
again on the real Docker engine, real files and moto's ELBv2, each part verified;
production refuses them; a drill stopped after its rollback resumes forward in another
process. The full-system target drills its members in order."""

from __future__ import annotations

import io
import json
import socket
import tarfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest

from actions.configfiles import backup_name
from actions.params import AwsConnection
from bot.application.drills import DrillRecorder, Drills
from bot.application.flows import Flows
from bot.config import RollbackConfig, parse_config
from bot.execution.planner import Planner
from bot.execution.planning import restore_for_run
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner, stored_steps
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Run
from bot.persistence.store import StepView, Store
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.flows import RecordingThread
from tests.fakes.pg import dump
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.dockerd", "tests.fakes.aws", "tests.fakes.pg"]

APP = "rbt-app"


def configured(**targets: dict[str, Any]) -> RollbackConfig:
    env = {
        "incident_channel": "C0STAGING1",
        "approvers": {"users": [BOB, CAROL]},
        "targets": targets,
    }
    raw = {"environments": {"staging": env, "prod": env}}
    return parse_config(raw, path=Path("drill.yml"))


def drills_on(store: Store, config: RollbackConfig) -> Drills:
    flows = Flows(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=Planner(),
        thread=RecordingThread(store=store),
    )
    return Drills(flows)


def runner(drills: Drills, progress: Any = None) -> Runner:
    return Runner(
        store=drills.store,
        workflow=Workflow(store=drills.store, config=drills.config),
        config=drills.config,
        planner=Planner(),  # as a new process would: nothing in memory but the database
        progress=DrillRecorder(progress or NullProgress(), drills.store),
        sleep=lambda _: None,
    )


def approved_drill(drills: Drills, target: str) -> Run:
    opened = drills.open(environment="staging", target=target, requester=ALICE)
    assert drills.flows.approve(opened.run.id, user=BOB).started
    return opened.run


def finished(drills: Drills, run_id: str) -> Run:
    run = drills.store.runs.get(run_id)
    assert run is not None
    return run


# -- Docker --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def served(port: int) -> str:
    """The version the container publishing `port` serves, once it listens."""

    def fetch() -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.strip()
        except httpx.TransportError:
            return None

    return str(wait_for(fetch, timeout=30, what=f"a server on port {port}"))


@dataclass
class Container:
    name: str
    port: int

    def params(self, engine: Engine) -> dict[str, Any]:
        return {
            "kind": "docker",
            "container": self.name,
            "image": APP,
            "socket": engine.socket,
            "settle": 1.0,
            "health_timeout": 20.0,
            "stop_timeout": 0,
            "keep_retired": 0,
        }


@pytest.fixture
def container(dockerd: Engine) -> Container:
    """A container of rbt-app:v2 publishing 8080 on a free local port."""
    name, port = f"rbt-drill-{uuid.uuid4().hex[:8]}", free_port()
    host = {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}
    dockerd.run(name, {"Image": f"{APP}:v2", "HostConfig": host}, networks={dockerd.network(): {}})
    return Container(name, port)


def test_a_docker_drill_swaps_back_then_forward_each_swap_verified(
    dockerd: Engine, container: Container, store: Store
) -> None:
    drills = drills_on(store, configured(web=container.params(dockerd)))
    run = approved_drill(drills, "web")

    assert runner(drills).run_pending() == [run.id]

    done = finished(drills, run.id)
    assert done.state == "succeeded", done.outcome
    steps = [(s.name, s.state) for s in store.steps.of(run.id)]
    assert steps == [
        ("drill.marker", "succeeded"),
        ("docker.swap_container", "succeeded"),
        ("docker.swap_container", "succeeded"),
    ]
    back, forward = (s for s in store.steps.of(run.id) if s.name == "docker.swap_container")
    assert f"{APP}:v1" in back.summary and f"{APP}:v2" in forward.summary
    assert served(container.port) == "v2"
    assert dockerd.inspect(container.name)["Config"]["Image"] == f"{APP}:v2"
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert drill.recover_seconds is not None and drill.forward_seconds is not None
    assert [s["part"] for s in drill.steps] == ["marker", "rollback", "forward"]


class StopAfter(NullProgress):
    """Ask the runner to stop (SIGTERM) once the step at `position` finished."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.runner: Runner | None = None

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        if step["position"] == self.position and self.runner is not None:
            self.runner.request_stop()


def test_a_docker_drill_stopped_after_its_rollback_resumes_forward_in_another_process(
    dockerd: Engine, container: Container, store: Store
) -> None:
    drills = drills_on(store, configured(web=container.params(dockerd)))
    run = approved_drill(drills, "web")
    stopper = StopAfter(position=1)
    first = runner(drills, stopper)
    stopper.runner = first
    first.run_pending()
    assert finished(drills, run.id).state == "running"
    assert served(container.port) == "v1"  # rolled back, not yet forward

    assert runner(drills).run_pending() == [run.id]

    done = finished(drills, run.id)
    assert done.state == "succeeded", done.outcome
    assert served(container.port) == "v2"
    assert any(k.startswith("drill.forward:") for k in done.memory)  # the forward's own


def test_production_refuses_a_docker_drill_and_records_nothing(
    dockerd: Engine, container: Container, store: Store
) -> None:
    drills = drills_on(store, configured(web=container.params(dockerd)))
    with pytest.raises(Refused, match="drills are not allowed in prod"):
        drills.open(environment="prod", target="web", requester=ALICE)
    assert store.runs.find() == [] and store.drills.find() == []
    assert served(container.port) == "v2"


# -- configuration files -------------------------------------------------------------------


def archive(files: dict[str, str]) -> bytes:
    """A backup archive as `tar -C dir -czf - .` writes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            info = tarfile.TarInfo(f"./{path}")
            data = text.encode()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def contents(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_a_configuration_drill_restores_the_backup_then_the_live_configuration_again(
    tmp_path: Path, store: Store
) -> None:
    live, backups = tmp_path / "config", tmp_path / "backups"
    live.mkdir()
    backups.mkdir()
    (live / "app.yaml").write_text("version: 3\n")
    (live / "feature.flags").write_text("new_checkout=on\n")
    old = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    (backups / backup_name(old)).write_bytes(archive({"app.yaml": "version: 2\n"}))
    restarts = tmp_path / "restarts"
    target = {
        "kind": "config",
        "directory": str(live),
        "backups": str(backups),
        "restart_command": ["sh", "-c", f"cat {live}/app.yaml >> {restarts}"],
    }
    drills = drills_on(store, configured(conf=target))
    before = contents(live)
    run = approved_drill(drills, "conf")

    assert runner(drills).run_pending() == [run.id]

    done = finished(drills, run.id)
    assert done.state == "succeeded", done.outcome
    assert [s.name for s in store.steps.of(run.id)] == [
        "configfiles.backup",
        "configfiles.restore",
        "configfiles.restart",
        "configfiles.restore_pre_rollback",
        "configfiles.restart",
    ]
    assert contents(live) == before
    # each part verified: the app restarted on the old configuration, then on the live one
    assert restarts.read_text() == "version: 2\nversion: 3\n"
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert drill.from_version == "the live configuration"
    assert [s["part"] for s in drill.steps] == ["rollback"] * 3 + ["forward"] * 2


# -- load balancer -------------------------------------------------------------------------


@dataclass
class Alb:
    """An ALB in moto: a listener forwarding to green, and a blue target group idle."""

    elb: Any
    aws: AwsConnection
    lb_arn: str
    blue: str
    green: str
    listener: str

    def defaults(self) -> list[dict[str, Any]]:
        found = self.elb.describe_listeners(ListenerArns=[self.listener])["Listeners"][0]
        return list(found["DefaultActions"])


@pytest.fixture
def alb(aws: AwsConnection) -> Alb:
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
    blue, green = (
        elb.create_target_group(
            Name=f"{name}-{tag}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        for name in ("blue", "green")
    )
    for n, group in enumerate((blue, green)):
        elb.register_targets(TargetGroupArn=group, Targets=[{"Id": f"10.0.1.{10 + n}"}])
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": green}],
    )["Listeners"][0]["ListenerArn"]
    return Alb(elb, aws, lb, blue, green, listener)


def test_a_load_balancer_drill_switches_to_the_stable_colour_and_restores_the_routes(
    alb: Alb, store: Store
) -> None:
    target = {
        "kind": "bluegreen",
        "load_balancer_arn": alb.lb_arn,
        "blue": {"target_group_arn": alb.blue},
        "green": {"target_group_arn": alb.green},
        "aws": alb.aws.model_dump(),
        "verify_timeout": 1.0,
    }
    drills = drills_on(store, configured(lb=target))
    before = alb.defaults()
    run = approved_drill(drills, "lb")

    assert runner(drills).run_pending() == [run.id]

    done = finished(drills, run.id)
    assert done.state == "succeeded", done.outcome
    steps = [(s.name, s.state) for s in store.steps.of(run.id)]
    assert steps == [
        ("drill.marker", "succeeded"),
        ("loadbalancer.switch_traffic", "succeeded"),
        ("loadbalancer.restore_traffic", "succeeded"),
    ]
    assert alb.defaults() == before  # green takes all traffic again
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert [s["part"] for s in drill.steps] == ["marker", "rollback", "forward"]


# -- the full system -----------------------------------------------------------------------


@pytest.mark.postgres
def test_a_full_system_drill_runs_its_parts_in_order_and_resumes_from_the_stored_plan(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    newest = dump(voxflow_db, dumps, datetime(2026, 12, 7, 3, 0, tzinfo=UTC))
    live, backups = tmp_path / "config", tmp_path / "backups"
    live.mkdir()
    backups.mkdir()
    (live / "app.yaml").write_text("version: 3\n")
    old = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    (backups / backup_name(old)).write_bytes(archive({"app.yaml": "version: 2\n"}))
    config = configured(
        db={
            "kind": "database",
            "connection": {"host": "127.0.0.1", "dbname": voxflow_db},
            "backups": str(dumps),
        },
        conf={"kind": "config", "directory": str(live), "backups": str(backups)},
        system={"kind": "full", "targets": ["db", "conf"]},
    )
    drills = drills_on(store, config)
    with pytest.raises(Refused, match="drills are not allowed in prod"):
        drills.open(environment="prod", target="system", requester=ALICE)
    run = approved_drill(drills, "system")
    stored = finished(drills, run.id)
    restored = restore_for_run(
        Planner(), stored, config.environment("staging"), stored_steps(stored)
    )
    assert [r.problem for r in restored] == [""] * len(stored.plan)

    assert runner(drills).run_pending() == [run.id]

    done = finished(drills, run.id)
    assert done.state == "succeeded", done.outcome
    assert json.loads(done.point or "{}") == {
        "conf": "config_backup_20261201_120000.tar.gz",
        "db": f"backup:{newest}",
    }
    assert [(s.phase, s.name) for s in stored_steps(done)] == [
        ("rollback", "database.restore_into_recovery"),
        ("verify", "database.verify"),
        ("cleanup", "database.drop_scratch"),
        ("prepare", "configfiles.backup"),
        ("rollback", "configfiles.restore"),
        ("forward", "configfiles.restore_pre_rollback"),
    ]
    assert (live / "app.yaml").read_text() == "version: 3\n"
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert drill.to_version == "its members in order: db, conf"
    assert set(drill.targets) == {"db", "conf"}
