"""A crash harness: a runner in a child process SIGKILLs itself at a chosen point of a plan.

Reusable for any target: a `CrashCase` names the config (as a dict), how the
child builds its planner (`factory`: "module:function" taking `factory_args`,
or None for the real `bot.execution.planner.target_factory()`), and the point. Points cover
every step of the approved plan, three each:

- `started`: the step's `running` record is committed, the action not called;
- `returned`: the action returned (its work is done), its result not recorded;
- `saved`: the step's result is committed (the boundary before the next step).

The parent (`CrashChildren.crash_and_resume`) runs the child, checks it died of
SIGKILL, lets its lease lapse, and finishes the run with a second runner.
Assertions about the systems (what ran twice, what state production is in)
belong to the test.

A child is forked from a server that imported the bot once (`python -m
tests.fakes.crash`, one per pytest worker: the `crash_children` fixture), so a
kill point costs a fork, not an interpreter start and the bot's imports. Tests
that use the fixture are marked `crash` (tests/conftest.py) and left out of the
fast loop. Test modules load this as a plugin and import its helpers before pytest can
rewrite it: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import select
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions.base import Action, StepContext, StepResult
from bot.config import RollbackConfig, parse_config
from bot.domain.decision import Answers, Severity
from bot.domain.plans import StoredStep
from bot.domain.states import RunKind, StepState
from bot.execution.drill_plans import build_drill
from bot.execution.leases import Hold
from bot.execution.planner import Planner, TargetFactory, target_factory
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store, make_engine, upgrade
from tests.fakes.rows import set_run_fields

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
    drill: bool = False
    """A drill of the target (its plan from `build_drill`) rather than a rollback."""

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
    if case.drill:
        plan = build_drill(case.planner(), env_name=case.environment, env=env, target=case.target)
        _, run = workflow.request(
            plan=plan,
            requester=REQUESTER,
            severity=Severity.LOW,
            answers=Answers(),
            source="drill",
            kind=RunKind.DRILL,
        )
        set_run_fields(store, run.id, approvals_required=env.drill_approvals_required)
        return workflow.approve(run.id, user=APPROVER).run
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

    def _save(self, run: Run, hold: Hold, stored: StoredStep, *, state: str, **fields: Any) -> None:
        super()._save(run, hold, stored, state=state, **fields)
        if state == StepState.RUNNING:
            self._current = stored.position
            self._die("started", stored.position)
        else:
            self._die("saved", stored.position)

    def _attempt(
        self, run: Run, hold: Hold, action: Action, ctx: StepContext
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


class CrashChildren:
    """The fork server: a child interpreter with the bot imported, forking one child a case."""

    def __init__(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.crash"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._server.pid, signal.SIGKILL)
            self._server.wait(timeout=30)

    def _child(self, request: dict[str, Any], *, timeout: float = 120) -> int:
        """Fork a child for `request`; return its exit code (negative: killed by a signal)."""
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        ready, _, _ = select.select([self._server.stdout], [], [], timeout)
        assert ready, f"the crash child did not end within {timeout} s"
        return int(json.loads(self._server.stdout.readline())["returncode"])

    def crash_and_resume(
        self, *, url: str, case: CrashCase, case_file: Path, kill: tuple[str, int]
    ) -> tuple[Store, Run]:
        """Approve a run, kill a child runner at `kill`, finish the run in this process."""
        engine = make_engine(url)
        upgrade(engine)
        store = Store(engine)
        run = approved_run(store, case)
        case.dump(case_file)
        stderr = case_file.with_suffix(".stderr")
        returncode = self._child(
            {
                "argv": [url, str(case_file), run.id, *map(str, kill)],
                "env": dict(os.environ),
                "stderr": str(stderr),
            }
        )
        assert returncode == -signal.SIGKILL, (kill, returncode, stderr.read_text()[-2000:])
        # the killed runner's lease lapses (leases are timed on the database's clock)
        set_run_fields(store, run.id, lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
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
        final = store.runs.get(run.id)
        assert final is not None
        return store, final


@pytest.fixture(scope="session")
def crash_children() -> Iterator[CrashChildren]:
    """One fork server per pytest worker (a session is a worker under xdist)."""
    children = CrashChildren()
    try:
        yield children
    finally:
        children.close()


def _fork_one(request: dict[str, Any]) -> int:
    """Run one child in a fork of this process; return its exit code."""
    factory = CrashCase.load(Path(request["argv"][1])).factory
    if factory:  # imported here once, not in every child
        importlib.import_module(factory.split(":")[0])
    pid = os.fork()
    if pid == 0:  # the child: its own environment, its output kept out of the protocol
        os.environ.clear()
        os.environ.update(request["env"])
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        status = 1
        try:
            url, case_file, run_id, kind, position = request["argv"]
            child(url, Path(case_file), run_id, kind, int(position))
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    """Serve: one JSON request a line on stdin, one `{"returncode": N}` line back."""
    import actions

    # Every target's module and client (httpx, kubernetes, boto3, psycopg), once, before any fork.
    for module in pkgutil.walk_packages(actions.__path__, "actions."):
        importlib.import_module(module.name)
    for line in sys.stdin:
        returncode = _fork_one(json.loads(line))
        print(json.dumps({"returncode": returncode}), flush=True)


if __name__ == "__main__":
    main()
