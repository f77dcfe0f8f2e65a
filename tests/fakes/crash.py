"""A crash harness: a runner in a child process SIGKILLs itself at a chosen point of a plan.

Reusable for any target: a `CrashCase` names the config (as a dict), how the
child builds its planner (`factory`: "module:function" taking `factory_args`,
or None for the real `bot.execution.planner.target_factory()`), and the point. Points cover
every step of the approved plan, three each:

- `started`: the step's `running` record is committed, the action not called;
- `returned`: the action returned (its work is done), its result not recorded;
- `saved`: the step's result is committed (the boundary before the next step).

The parent (`crash_and_resume`) runs the child, checks it died of SIGKILL, lets
its lease lapse, and finishes the run with a second runner. Assertions about
the systems (what ran twice, what state production is in) belong to the test.

    python -m tests.fakes.crash DATABASE_URL CASE_JSON RUN_ID KIND POSITION
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actions.base import Action, StepContext, StepResult
from bot.config import RollbackConfig, parse_config
from bot.domain.decision import Answers, Severity
from bot.domain.plans import StoredStep
from bot.domain.states import StepState
from bot.execution.planner import Planner, TargetFactory, target_factory
from bot.execution.runner import NullProgress, Runner, _Hold
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store, make_engine, upgrade

ROOT = Path(__file__).parents[2]
KINDS = ("started", "returned", "saved")
REQUESTER, APPROVER = "UALICE0001", "UBOB000001"


@dataclass(frozen=True)
class CrashCase:
    """What the child and the resuming runner build: config, planner, the rollback asked for."""

    config: dict[str, Any]
    factory: str | None = None
    factory_args: dict[str, Any] = field(default_factory=dict)
    environment: str = "prod"
    target: str = "app"
    point: str | None = None

    def parsed(self) -> RollbackConfig:
        return parse_config(self.config, path=Path("crash.yml"))

    def planner(self) -> Planner:
        if self.factory is None:
            return Planner(factory=target_factory())
        module, name = self.factory.split(":")
        make: Callable[..., TargetFactory] = getattr(importlib.import_module(module), name)
        return Planner(factory=make(**self.factory_args))

    def dump(self, path: Path) -> Path:
        path.write_text(json.dumps(self.__dict__))
        return path

    @classmethod
    def load(cls, path: Path) -> CrashCase:
        return cls(**json.loads(path.read_text()))


def points(run: Run) -> list[tuple[str, int]]:
    """Every kill point of the run's approved plan."""
    return [(kind, step["position"]) for step in run.plan for kind in KINDS]


def approved_run(store: Store, case: CrashCase) -> Run:
    """Request and approve the case's rollback."""
    config = case.parsed()
    workflow = Workflow(store=store, config=config)
    env = config.environment(case.environment)
    plan = case.planner().build(
        env_name=case.environment, env=env, target=case.target, point=case.point
    )
    _, run = workflow.request(
        plan=plan, requester=REQUESTER, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    return workflow.approve(run.id, user=APPROVER).run


@dataclass
class CrashingRunner(Runner):
    """A runner that SIGKILLs its own process at `kill` = (kind, position)."""

    kill: tuple[str, int] = ("", -1)
    _current: int = -1

    def _die(self, kind: str, position: int) -> None:
        if (kind, position) == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)

    def _save(
        self, run: Run, hold: _Hold, stored: StoredStep, *, state: str, **fields: Any
    ) -> None:
        super()._save(run, hold, stored, state=state, **fields)
        if state == StepState.RUNNING:
            self._current = stored.position
            self._die("started", stored.position)
        else:
            self._die("saved", stored.position)

    def _attempt(
        self, run: Run, hold: _Hold, action: Action, ctx: StepContext
    ) -> tuple[StepResult | None, str | None]:
        outcome = super()._attempt(run, hold, action, ctx)
        self._die("returned", self._current)
        return outcome


def child(url: str, case_file: Path, run_id: str, kind: str, position: int) -> None:
    """Run the case's run until the kill point (never returns normally if it is reached)."""
    case = CrashCase.load(case_file)
    store = Store(make_engine(url))
    config = case.parsed()
    CrashingRunner(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=case.planner(),
        progress=NullProgress(),
        lease_seconds=30.0,
        kill=(kind, position),
    ).execute(run_id)


def crash_and_resume(
    *, url: str, case: CrashCase, case_file: Path, kill: tuple[str, int]
) -> tuple[Store, Run]:
    """Approve a run, kill a child runner at `kill`, finish the run in this process."""
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    run = approved_run(store, case)
    case.dump(case_file)
    result = subprocess.run(
        [sys.executable, "-m", "tests.fakes.crash", url, str(case_file), run.id, *map(str, kill)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, (kill, result.returncode, result.stderr[-2000:])
    # the killed runner's lease lapses (leases are timed on the database's clock)
    store.set_run_fields(run.id, lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    config = case.parsed()
    resumer = Runner(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=case.planner(),
        progress=NullProgress(),
        sleep=lambda s: None,
    )
    assert resumer.run_pending() == [run.id]
    final = store.run(run.id)
    assert final is not None
    return store, final


def main() -> None:
    url, case_file, run_id, kind, position = sys.argv[1:6]
    child(url, Path(case_file), run_id, kind, int(position))


if __name__ == "__main__":
    main()
