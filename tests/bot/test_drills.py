"""Drills on the stand-in cluster: the plan, the run, the record, the refusals, the resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import Finding, Level
from bot.application.drills import (
    KINDS,
    DrillRecorder,
    Drills,
    DrillStatus,
    drill_help,
    measure,
    verdict_held,
    verdict_of,
)
from bot.application.flows import Flows
from bot.config import RollbackConfig, parse_config
from bot.config_file import ConfigError
from bot.domain.plans import StoredStep
from bot.domain.states import RunKind
from bot.domain.verdict import Verdict
from bot.execution.drill_plans import build_drill
from bot.execution.planner import Planner
from bot.execution.planning import restore_for_run
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner, stored_steps
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Drill, Incident, Run
from bot.persistence.store import StepView, Store
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.rows import set_run_fields

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NAMESPACE, APP = "voxflow-staging", "voxflow-api"
IMAGES = ["voxflow/api:v1.2.2", "voxflow/api:v1.2.3", "voxflow/api:v1.2.4"]


def env_dict(kube: KubeCluster, **extra: Any) -> dict[str, Any]:
    return {
        "incident_channel": "C0STAGING1",
        "approvers": {"users": [BOB, CAROL]},
        "approvals_required": 2,
        "targets": {
            "app": {
                "kind": "kubernetes",
                "namespace": NAMESPACE,
                "deployment": APP,
                "connection": {"mode": "kubeconfig", "kubeconfig": str(kube.kubeconfig)},
                "rollout_timeout": 30,
            },
            "db": {"kind": "database", "connection": {"dbname": "voxflow"}, "backups": "/b"},
        },
        **extra,
    }


@pytest.fixture
def cluster(kube: KubeCluster) -> KubeCluster:
    kube.fake.add_deployment(NAMESPACE, APP, images=IMAGES, replicas=2)
    return kube


@pytest.fixture
def drill_config(cluster: KubeCluster) -> RollbackConfig:
    raw = {"environments": {"staging": env_dict(cluster), "prod": env_dict(cluster)}}
    return parse_config(raw, path=Path("drill.yml"))


@dataclass
class SilentThread:
    """The Slack side of the flows: a thread that opens and records nothing else."""

    store: Store
    opened: list[str] = field(default_factory=list)

    def open(self, incident: Incident, run: Run) -> Run:
        self.opened.append(incident.id)
        set_run_fields(self.store, run.id, slack={"channel": "C0STAGING1", "thread_ts": "1.0"})
        fresh = self.store.runs.get(run.id)
        assert fresh is not None
        return fresh

    def refresh(self, run_id: str) -> None:
        return None

    def post_checklist(self, run: Run) -> None:
        return None

    def stale(self, run_id: str) -> None:
        return None


@pytest.fixture
def drills(store: Store, drill_config: RollbackConfig) -> Drills:
    flows = Flows(
        store=store,
        workflow=Workflow(store=store, config=drill_config),
        config=drill_config,
        planner=Planner(),
        thread=SilentThread(store),
    )
    return Drills(flows)


def image_of(cluster: KubeCluster) -> str:
    deployment = cluster.fake.deployment(NAMESPACE, APP)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_the_drill_plan_marks_rolls_back_then_forward_from_the_renumbered_revision(
    drill_config: RollbackConfig,
) -> None:
    env = drill_config.environment("staging")
    plan = build_drill(Planner(), env_name="staging", env=env, target="app")
    names = [(s.phase, s.action.name) for s in plan.steps]
    assert names == [
        ("drill", "drill.marker"),
        ("rollback", "kubernetes.rollout_undo"),
        ("verify", "kubernetes.rollout_status"),
        ("forward", "kubernetes.rollout_undo"),
        ("forward", "kubernetes.rollout_status"),
    ]
    back, forward = plan.steps[1].stored().spec, plan.steps[3].stored().spec
    assert (back["from_revision"], back["to_revision"]) == (3, 2)
    assert (forward["from_revision"], forward["to_revision"]) == (4, 3)  # MaxRevision + 1
    assert forward["images"] == [IMAGES[-1]]
    assert plan.point == "2" and all(s.source == "app" for s in plan.steps)


def test_a_drill_runs_on_the_stand_in_cluster_and_records_its_measurements(
    drills: Drills, store: Store, cluster: KubeCluster
) -> None:
    opened = drills.open(environment="staging", target="app", requester=ALICE)
    assert opened.run.approvals_required == 1  # not the environment's 2
    assert opened.incident.source == "drill"
    recorded = opened.run.verdicts or ()  # recorded at request, as a rollback's are
    assert [v.target for v in recorded] == ["app"]
    drill = store.drills.get(opened.run.id)
    assert drill is not None and drill.verdict == verdict_of(opened.run) is not None
    outcome = drills.flows.approve(opened.run.id, user=BOB)
    assert outcome.started
    runner = Runner(
        store=store,
        workflow=drills.flows.workflow,
        config=drills.config,
        planner=drills.flows.planner,
        progress=DrillRecorder(NullProgress(), store),
        sleep=lambda _: None,
    )
    assert runner.run_pending() == [opened.run.id]
    run = store.runs.get(opened.run.id)
    assert run is not None and run.state == "succeeded", run and run.outcome
    assert image_of(cluster) == IMAGES[-1]
    assert run.memory["drill.marker"].startswith("rev 3")
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert drill.recover_seconds is not None and drill.forward_seconds is not None
    assert [s["part"] for s in drill.steps] == ["marker", "rollback", "rollback"] + ["forward"] * 2
    assert drill.targets.keys() == {"app"}
    # no registry is reachable here, so the images are "not verified": risky, which a
    # drill's success neither confirms nor refutes
    assert (drill.verdict, drill.verdict_held) == ("risky", None)


def test_production_refuses_a_drill_and_records_nothing(drills: Drills, store: Store) -> None:
    with pytest.raises(Refused, match="drills are not allowed in prod"):
        drills.open(environment="prod", target="app", requester=ALICE)
    assert store.runs.find() == [] and store.drills.find() == []


def test_a_database_without_any_backup_is_refused_and_nothing_is_recorded(
    drills: Drills, store: Store
) -> None:
    with pytest.raises(Refused, match="voxflow has no backup to drill: no dump in /b"):
        drills.open(environment="prod", target="db", requester=ALICE)
    assert store.runs.find() == [] and store.drills.find() == []


def test_a_resumed_drill_rebuilds_every_stored_step_without_planning_again(
    drills: Drills, store: Store, cluster: KubeCluster
) -> None:
    opened = drills.open(environment="staging", target="app", requester=ALICE)
    run = store.runs.get(opened.run.id)
    assert run is not None and run.kind == RunKind.DRILL
    cluster.fake.add_deployment(NAMESPACE, "other", images=["x:1"])  # the world moves on
    env = drills.config.environment("staging")
    restored = restore_for_run(Planner(), run, env, stored_steps(run))
    assert [r.problem for r in restored] == [""] * len(run.plan)
    assert [r.stored.position for r in restored] == list(range(len(run.plan)))
    assert [r.action.describe() for r in restored if r.action] == [
        s["description"] for s in run.plan
    ]


def test_production_refuses_drills_unless_the_config_allows_them(cluster: KubeCluster) -> None:
    raw = {
        "environments": {
            "prod": env_dict(cluster, drills_allowed=True),
            "production": env_dict(cluster),
            "staging": env_dict(cluster, drills_allowed=False, drill_every="2w"),
            "qa": env_dict(cluster),
        }
    }
    config = parse_config(raw, path=Path("drill.yml"))
    allowed = {name: env.allows_drills(name) for name, env in config.environments.items()}
    assert allowed == {"prod": True, "production": False, "staging": False, "qa": True}
    assert config.environment("staging").drill_every == timedelta(weeks=2)
    assert config.environment("qa").drill_every == timedelta(days=30)


def test_a_drill_period_that_is_not_a_period_names_the_field(cluster: KubeCluster) -> None:
    raw = {"environments": {"qa": env_dict(cluster, drill_every="monthly")}}
    with pytest.raises(
        ConfigError, match=r"environments\.qa\.drill_every: 'monthly' is not a duration"
    ):
        parse_config(raw, path=Path("drill.yml"))


def _at(seconds: float) -> datetime:
    return datetime(2026, 11, 24, 3, 0, tzinfo=UTC) + timedelta(seconds=seconds)


def _step(position: int, name: str, phase: str, source: str | None = "app") -> StoredStep:
    return StoredStep(position, phase, name, name, False, True, 30.0, source=source, words=name)


def _record(position: int, start: float, end: float, state: str = "succeeded") -> StepView:
    return StepView(position, "x", state, 1, _at(start), _at(end), "", "", {})


def test_time_to_recover_runs_from_the_first_change_to_the_rollback_verified() -> None:
    plan = [
        _step(0, "drill.marker", "drill"),
        _step(1, "http.maintenance_on", "maintenance", None),
        _step(2, "kubernetes.rollout_undo", "rollback"),
        _step(3, "kubernetes.rollout_status", "verify"),
        _step(4, "http.health", "health", None),
        _step(5, "http.maintenance_off", "maintenance", None),
        _step(6, "kubernetes.rollout_undo", "forward"),
        _step(7, "kubernetes.rollout_status", "forward"),
    ]
    records = [
        _record(0, 0, 1),
        _record(1, 2, 3),
        _record(2, 3, 5),
        _record(3, 5, 60),
        _record(4, 60, 74),
        _record(5, 74, 75),
        _record(6, 80, 82),
        _record(7, 82, 100),
    ]
    measured = measure(plan, records)
    assert measured.recover_seconds == 72.0  # 2 s (maintenance on) to 74 s (health passed)
    assert measured.forward_seconds == 20.0
    assert measured.targets == {"app": 57.0}
    assert [s["seconds"] for s in measured.steps] == [1, 1, 2, 55, 14, 1, 2, 18]


def test_a_drill_whose_rollback_failed_has_no_time_to_recover() -> None:
    plan = [_step(0, "kubernetes.rollout_undo", "rollback"), _step(1, "x", "verify")]
    measured = measure(plan, [_record(0, 0, 2), _record(1, 2, 9, state="failed")])
    assert measured.recover_seconds is None and measured.forward_seconds is None


def _status(env: str, seconds: float | None, age_days: float) -> DrillStatus:
    now = _at(0)
    drill = Drill(
        run_id="r",
        environment=env,
        target="app",
        state="succeeded",
        recover_seconds=seconds,
        created_at=now - timedelta(days=age_days),
        finished_at=now - timedelta(days=age_days),
    )
    return DrillStatus(env, "app", drill, drill, now, timedelta(days=30))


def test_the_modal_help_says_how_long_rolling_back_took_in_the_last_drill() -> None:
    said = drill_help([_status("staging", 72.0, 2)], environment="staging", target="app")
    assert said == "Rolling back app took 1 m 12 s in the last drill (2 d 0 h ago)."
    assert not _status("staging", 72.0, 2).due and _status("staging", 72.0, 31).due
    line = _status("staging", 72.0, 2).line()
    assert line == "app in staging: last drill 2 d 0 h ago, time to recover 1 m 12 s"
    elsewhere = drill_help([_status("staging", 72.0, 40)], environment="prod", target="app")
    assert "in the last drill in staging" in elsewhere and "drill it again" in elsewhere
    never = drill_help([], environment="prod", target="app")
    assert never.startswith("app has never been drilled")


def test_a_safe_verdict_held_when_the_drill_succeeded_and_a_risky_one_when_it_failed() -> None:
    assert verdict_held("safe", succeeded=True) is True
    assert verdict_held("safe", succeeded=False) is False
    assert verdict_held("risky", succeeded=False) is None  # predicts neither outcome
    assert verdict_held("blocked", succeeded=False) is True
    assert verdict_held("blocked", succeeded=True) is False
    assert verdict_held(None, succeeded=True) is None


def test_the_listing_says_whether_the_drills_verdict_held() -> None:
    status = _status("staging", 72.0, 2)
    assert status.last is not None
    status.last.verdict, status.last.verdict_held = "safe", False
    assert status.line().endswith("; verdict safe did not hold")


def _verdict(target: str, level: Level) -> Verdict:
    return Verdict(target=target, level=level, evidence=(Finding(level, "seen", "seen"),))


def test_a_drills_verdict_kind_is_its_worst_targets_from_the_plan_or_the_run(
    drills: Drills,
) -> None:
    run = drills.open(environment="staging", target="app", requester=ALICE).run
    assert verdict_of(run) in KINDS.values()
    loss = (_verdict("db", Level.LOSS), _verdict("app", Level.OK))
    assert verdict_of(Run(verdicts=loss)) == "safe_with_data_loss"
    risky = (_verdict("app", Level.RISKY), _verdict("db", Level.LOSS))
    assert verdict_of(Run(verdicts=risky)) == "risky"
    assert verdict_of(Run()) is None  # planned before verdicts existed


def test_listing_flags_targets_never_drilled_and_settles_drills_that_ended_unseen(
    drills: Drills, store: Store
) -> None:
    before = {(s.environment, s.target): s.due for s in drills.statuses()}
    # prod's app is not drilled; a database's restore drill runs in every environment
    assert before == {("staging", "app"): True, ("staging", "db"): True, ("prod", "db"): True}
    opened = drills.open(environment="staging", target="app", requester=ALICE)
    drills.flows.cancel(opened.run.id, user=ALICE)  # ended without the runner seeing it
    (status,) = [s for s in drills.statuses() if s.target == "app"]
    assert status.last is not None and status.last.state == "cancelled"
    assert status.due  # a cancelled drill measured nothing: still due
    assert "no time to recover" in status.line()


class StopAfter(NullProgress):
    """Ask the runner to stop (SIGTERM) once the step at `position` finished."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.runner: Runner | None = None

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        if step["position"] == self.position and self.runner is not None:
            self.runner.request_stop()


def test_a_drill_stopped_after_its_rollback_is_resumed_forward_by_another_process(
    drills: Drills, store: Store, cluster: KubeCluster
) -> None:
    opened = drills.open(environment="staging", target="app", requester=ALICE)
    drills.flows.approve(opened.run.id, user=BOB)
    stopper = StopAfter(position=2)  # the rollback verified; the roll forward not started
    first = Runner(
        store=store,
        workflow=drills.flows.workflow,
        config=drills.config,
        planner=Planner(),
        progress=DrillRecorder(stopper, store),
        sleep=lambda _: None,
    )
    stopper.runner = first
    first.run_pending()
    halfway = store.runs.get(opened.run.id)
    assert halfway is not None and halfway.state == "running"
    assert image_of(cluster) == IMAGES[1]  # rolled back, not yet forward
    second = Runner(  # a new process: a new planner, nothing in memory but the database
        store=store,
        workflow=Workflow(store=store, config=drills.config),
        config=drills.config,
        planner=Planner(),
        progress=DrillRecorder(NullProgress(), store),
        sleep=lambda _: None,
    )
    assert second.run_pending() == [opened.run.id]
    done = store.runs.get(opened.run.id)
    assert done is not None and done.state == "succeeded", done and done.outcome
    assert image_of(cluster) == IMAGES[-1]
    states = [(r.name, r.state) for r in store.steps.of(done.id)]
    assert states[3] == ("kubernetes.rollout_undo", "succeeded")  # forward, from the stored spec
    drill = store.drills.get(done.id)
    assert drill is not None and drill.state == "succeeded" and drill.recover_seconds is not None
