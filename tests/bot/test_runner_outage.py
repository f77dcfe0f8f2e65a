"""A runner and its database apart: a step's end survives an outage, a cut-off runner stops.

An outage is every statement on the runner's engine refused (`tests.fakes.outage`), on SQLite and on
PostgreSQL, and, for PostgreSQL, a scratch cluster the test stops and starts.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.base import StepContext, StepResult, TargetPlan
from bot.config import RollbackConfig
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine, upgrade
from sandbox.web import Reply, WebStub
from tests.fakes.outage import Outage
from tests.fakes.pgcluster import ArchivedCluster, as_postgres
from tests.fakes.runners import approved_run, make_runner
from tests.fakes.targets import ScriptedTarget, script_log
from tests.fakes.waiting import wait_for

pytest_plugins = ["tests.fakes.pgcluster"]


class Undo:
    """The rollback step: waits for `go`, on the step's ticker, then posts `url` once.

    Records when it entered and left (`times`), so a test can tell whether two runners
    were ever inside it at once.
    """

    name = "undo"
    timeout = 60.0

    def __init__(self, *, url: str, go: threading.Event, idempotent: bool) -> None:
        self.url = url
        self.go = go
        self.idempotent = idempotent
        self.times: list[tuple[str, float]] = []

    def describe(self) -> str:
        return f"post {self.url}"

    def spec(self) -> dict[str, Any]:
        return {"idempotent": self.idempotent}

    def run(self, ctx: StepContext) -> StepResult:
        self.times.append(("enter", time.monotonic()))
        try:
            while not self.go.is_set():
                ctx.ticker.sleep(0.02)
            with urllib.request.urlopen(urllib.request.Request(self.url, method="POST")):
                pass
            return StepResult(summary="posted")
        finally:
            self.times.append(("leave", time.monotonic()))


class HookTarget(ScriptedTarget):
    """A scripted target whose rollback step is `undo`."""

    def __init__(self, script_file: Path, undo: Undo) -> None:
        super().__init__(script_file)
        self.undo = undo

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        plan = super().plan(ref, force=force)
        return TargetPlan(
            prepare=plan.prepare, rollback=[self.undo], verify=plan.verify, resume=plan.resume
        )

    def restore(self, name: str, spec: dict[str, Any]) -> Any:
        return self.undo if name == "undo" else super().restore(name, spec)


@pytest.fixture
def web() -> Iterator[WebStub]:
    with WebStub() as stub:
        stub.route("POST", "/hook", Reply(status=200, json={"ok": True}))
        yield stub


def hook_planner(script: Path, web: WebStub, *, idempotent: bool) -> tuple[Planner, Undo]:
    undo = Undo(url=f"{web.url}/hook", go=threading.Event(), idempotent=idempotent)
    return Planner(factory=lambda params: HookTarget(script, undo)), undo


def step_running(store: Store, run_id: str, name: str) -> bool:
    return any(s.name == name and s.state == "running" for s in store.steps.of(run_id))


def survive_an_outage(
    store: Store,
    config: RollbackConfig,
    script: Path,
    web: WebStub,
    *,
    idempotent: bool,
    stop: Any,
    start: Any,
) -> None:
    """Run a plan whose `undo` ends while the database is away; assert it ran once and won."""
    planner, undo = hook_planner(script, web, idempotent=idempotent)
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner, lease_seconds=12, owner="a")
    thread = threading.Thread(target=runner.execute, args=(run.id,))
    thread.start()
    wait_for(lambda: step_running(store, run.id, "undo"), what="undo started")
    stop()
    undo.go.set()
    wait_for(lambda: web.calls("POST", "/hook"), what="the webhook posted")
    start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(web.calls("POST", "/hook")) == 1
    assert [t for t, _ in undo.times] == ["enter", "leave"]
    steps = {s.name: (s.state, s.attempts) for s in store.steps.of(run.id)}
    assert steps["undo"] == ("succeeded", 1)
    assert script_log(script) == ["stop_workers", "status", "start_workers"]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome
    kinds = {e.kind for e in store.events.of(run.incident_id)}
    assert "run.lease_lost" not in kinds and "step.interrupted" not in kinds


@pytest.mark.parametrize("idempotent", [False, True], ids=["not_idempotent", "idempotent"])
def test_a_step_that_ends_while_the_database_is_away_runs_once_and_the_run_succeeds(
    store: Store, config: RollbackConfig, script: Path, web: WebStub, idempotent: bool
) -> None:
    outage = Outage(store.engine)

    def stop() -> None:
        outage.down.set()

    def start() -> None:
        seen = outage.refused
        wait_for(lambda: outage.refused > seen + 2, what="the end's write refused and retried")
        outage.down.clear()

    survive_an_outage(store, config, script, web, idempotent=idempotent, stop=stop, start=start)


@pytest.mark.postgres
def test_a_step_that_ends_while_postgres_is_stopped_runs_once_and_the_run_succeeds(
    archived_cluster: ArchivedCluster, config: RollbackConfig, script: Path, web: WebStub
) -> None:
    cluster = archived_cluster
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/postgres")
    upgrade(engine)
    store = Store(engine)
    pg_ctl = [str(cluster.bin / "pg_ctl"), "-D", str(cluster.data), "-l", str(cluster.root / "log")]

    def stop() -> None:
        as_postgres([*pg_ctl, "-m", "fast", "-w", "stop"])

    def start() -> None:
        as_postgres([*pg_ctl, "-w", "start"])

    try:
        survive_an_outage(store, config, script, web, idempotent=False, stop=stop, start=start)
    finally:
        engine.dispose()


def test_a_runner_cut_off_from_the_database_leaves_its_step_before_another_enters_it(
    database_url: str, store: Store, config: RollbackConfig, script: Path, web: WebStub
) -> None:
    planner, undo = hook_planner(script, web, idempotent=True)
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    cut_engine = make_engine(database_url)
    cut = Store(cut_engine)
    outage = Outage(cut_engine)
    first, _ = make_runner(
        cut, Workflow(store=cut, config=config), config, planner, lease_seconds=3, owner="a"
    )
    second, _ = make_runner(store, workflow, config, planner, lease_seconds=30, owner="b")
    thread = threading.Thread(target=first.execute, args=(run.id,))
    thread.start()
    claimed: list[bool] = []
    try:
        wait_for(lambda: undo.times, what="a inside undo")
        outage.down.set()
        successor = threading.Thread(
            target=lambda: claimed.append(
                wait_for(lambda: second.execute(run.id), timeout=30, what="b claimed the run")
            )
        )
        successor.start()
        wait_for(lambda: [t for t, _ in undo.times].count("enter") == 2, what="b inside undo")
    finally:
        undo.go.set()
        thread.join(timeout=30)
        successor.join(timeout=30)
        cut_engine.dispose()
    assert claimed == [True]
    (a_in, _), (a_out, left_a), (b_in, entered_b), (b_out, _left_b) = undo.times
    assert (a_in, a_out, b_in, b_out) == ("enter", "leave", "enter", "leave")
    assert left_a < entered_b
    assert len(web.calls("POST", "/hook")) == 1  # only b posted: a was cancelled while waiting
    assert script_log(script) == ["stop_workers", "status", "start_workers"]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome


def test_an_end_kept_past_the_lease_is_written_when_the_same_runner_claims_the_run_again(
    store: Store, config: RollbackConfig, script: Path, web: WebStub
) -> None:
    planner, undo = hook_planner(script, web, idempotent=False)
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    outage = Outage(store.engine)
    runner, _ = make_runner(store, workflow, config, planner, lease_seconds=3, owner="a")
    thread = threading.Thread(target=runner.execute, args=(run.id,))
    thread.start()
    wait_for(lambda: step_running(store, run.id, "undo"), what="undo started")
    outage.down.set()
    undo.go.set()
    thread.join(timeout=60)  # the lease ran out with the end unwritten: the runner let go
    assert not thread.is_alive() and len(web.calls("POST", "/hook")) == 1
    outage.down.clear()
    assert step_running(store, run.id, "undo")
    wait_for(lambda: runner.execute(run.id), what="the same runner claimed the run again")
    assert len(web.calls("POST", "/hook")) == 1
    steps = {s.name: (s.state, s.attempts) for s in store.steps.of(run.id)}
    assert steps["undo"] == ("succeeded", 1)
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome
    assert "step.interrupted" not in {e.kind for e in store.events.of(run.incident_id)}
