"""A runner for tests, what it told its progress, and runs and incidents set up to work on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.config import RollbackConfig
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Incident, Run
from bot.persistence.store import StepView, Store
from tests.fakes.config import ALICE, BOB, Clock


class Recorder:
    """A Progress that writes down what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def run_started(self, run: Run, *, resumed: bool) -> None:
        self.calls.append(("run_started", resumed))

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        self.calls.append(("step_started", step["name"]))

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None:
        self.calls.append(("step_output", line))

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        self.calls.append(("step_finished", (step["name"], record.state)))

    def run_finished(self, run: Run) -> None:
        self.calls.append(("run_finished", run.state))

    def run_expired(self, run: Run) -> None:
        self.calls.append(("run_expired", run.id))


def approved_run(workflow: Workflow, planner: Planner) -> Run:
    env = workflow.config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target="app", point="1")
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    return workflow.approve(run.id, user=BOB).run


class Abandons:
    """The runner's abandon in tests: written down, never the exit of the test process."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.lines.append(message)


def make_runner(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, **kw: Any
) -> tuple[Runner, Recorder]:
    """A runner that does not sleep between retries and records (`Abandons`) instead of
    exiting when a step outstays its lease."""
    progress = Recorder()
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("abandon", Abandons())
    runner = Runner(
        store=store, workflow=workflow, config=config, planner=planner, progress=progress, **kw
    )
    return runner, progress


def states(store: Store, run_id: str) -> list[tuple[str, str]]:
    return [(s.name, s.state) for s in store.steps.of(run_id)]


def incident_with_history(store: Store, clock: Clock, *, fail: bool = False) -> Incident:
    """Detected 2 min before it was opened; 30 s to decide, 45 s to approve, 75 s to health."""
    detected = clock.now - timedelta(minutes=2)
    incident = store.incidents.create(
        environment="prod",
        target="app",
        severity="critical",
        source="monitoring",
        opened_by="monitoring",
        detected_at=detected,
    )
    moves = [
        (30, "run.requested", {}),
        (45, "run.approved", {}),
        (5, "run.started", {}),
        (40, "step.succeeded", {"position": 0, "name": "kubernetes.rollout_undo"}),
        (30, "step.failed" if fail else "step.succeeded", {"position": 1, "name": "http.health"}),
        (3, "run.failed" if fail else "run.succeeded", {}),
    ]
    for seconds, kind, detail in moves:
        clock.advance(seconds=seconds)
        store.events.add(incident_id=incident.id, kind=kind, actor=BOB, run_id="r1", detail=detail)
    return incident
