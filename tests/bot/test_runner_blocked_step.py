"""A runner cut off from the database while its step is blocked in a call.

The step is inside a pg tool's child process (`run_tool`, here `sleep 600`), not waiting on
the step's ticker: the child must be killed, and the step left, before the lease can be
taken; a step blocked in a call that heeds nothing makes the process abandon (exit 255, one
critical line), in a child process as a real bot would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actions import children, voice
from actions.base import StepContext, StepResult, TargetPlan
from actions.database.pgtools import run_tool
from bot.config import RollbackConfig
from bot.execution.leases import ABANDON_EXIT
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine
from tests.fakes.outage import Outage
from tests.fakes.processes import started
from tests.fakes.runners import approved_run, make_runner
from tests.fakes.targets import ScriptedTarget, script_log, write_script
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).parents[2]


class Restore:
    """The rollback step: the first time, a pg tool that runs for ten minutes; then one
    that ends at once. Records when each runner entered and left it."""

    name = "undo"
    timeout = 900.0
    idempotent = True

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def describe(self) -> str:
        return "restore with a pg tool"

    def spec(self) -> dict[str, Any]:
        return {"idempotent": True}

    def run(self, ctx: StepContext) -> StepResult:
        first = not self.times
        self.times.append(("enter", time.monotonic()))
        try:
            argv = ["sleep", "600"] if first else ["true"]
            done = run_tool(argv, conn=None, timeout=ctx.remaining())
            return StepResult(summary=f"{argv[0]} exited {done.returncode}")
        finally:
            self.times.append(("leave", time.monotonic()))


class RestoreTarget(ScriptedTarget):
    """A scripted target whose rollback step is `Restore`."""

    def __init__(self, script_file: Path, restore: Restore) -> None:
        super().__init__(script_file)
        self.step = restore

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        plan = super().plan(ref, force=force)
        return TargetPlan(
            prepare=plan.prepare, rollback=[self.step], verify=plan.verify, resume=plan.resume
        )

    def restore(self, name: str, spec: dict[str, Any]) -> Any:
        return self.step if name == "undo" else super().restore(name, spec)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_child_process_of_a_cut_off_runner_dies_before_its_lease_can_be_taken(
    database_url: str, store: Store, config: RollbackConfig, script: Path
) -> None:
    restore = Restore()
    planner = Planner(factory=lambda params: RestoreTarget(script, restore))
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    cut_engine = make_engine(database_url)
    cut = Store(cut_engine)
    outage = Outage(cut_engine)
    abandoned: list[str] = []
    first, _ = make_runner(
        cut,
        Workflow(store=cut, config=config),
        config,
        planner,
        lease_seconds=6,
        owner="a",
        abandon=abandoned.append,
    )
    second, _ = make_runner(store, workflow, config, planner, lease_seconds=30, owner="b")
    thread = threading.Thread(target=first.execute, args=(run.id,))
    thread.start()
    claimed: list[bool] = []
    successor = threading.Thread(
        target=lambda: claimed.append(
            wait_for(lambda: second.execute(run.id), timeout=30, what="b claimed the run")
        )
    )
    try:
        (pid,) = wait_for(children.live_children, what="a's pg tool running")
        outage.down.set()
        successor.start()
        wait_for(lambda: not alive(pid), timeout=10, what="a's pg tool killed")
        # the database's own clock says the lease is still a's: nobody could have claimed it
        assert run.id not in store.leases.claimable()
        thread.join(timeout=30)
        assert not thread.is_alive()
        wait_for(lambda: claimed, timeout=30, what="b's turn")
    finally:
        outage.down.clear()
        thread.join(timeout=30)
        successor.join(timeout=30)
        cut_engine.dispose()
    assert claimed == [True] and abandoned == []
    (a_in, _), (a_out, left_a), (b_in, entered_b), (b_out, _left_b) = restore.times
    assert (a_in, a_out, b_in, b_out) == ("enter", "leave", "enter", "leave")
    assert left_a < entered_b
    assert script_log(script) == ["stop_workers", "status", "start_workers"]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome
    assert children.live_children() == []


def test_a_step_blocked_in_a_call_that_heeds_nothing_makes_the_process_exit_before_the_lease_ends(
    database_url: str, store: Store, config: RollbackConfig, script: Path, tmp_path: Path
) -> None:
    write_script(script, undo=["hang"])  # time.sleep(60): no ticker, no child process
    workflow = Workflow(store=store, config=config)
    planner = Planner(factory=lambda params: ScriptedTarget(script))
    run = approved_run(workflow, planner)
    argv = [sys.executable, "-m", "tests.fakes.cut_off_runner", database_url, str(script), run.id]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with started(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as child:
        _, err = child.communicate(timeout=60)
        # at the exit the lease was still the child's, on the database's clock
        assert run.id not in store.leases.claimable()
    assert child.returncode == ABANDON_EXIT, err
    critical = [line for line in err.splitlines() if line.startswith("CRITICAL")]
    assert len(critical) == 1, err
    assert f"{run.incident_id}: run {run.id}: step undo is still running" in critical[0]
    assert "abandoning the process (exit 255)" in critical[0]
    steps = {s.name: s.state for s in store.steps.of(run.id)}
    assert steps["undo"] == "running"  # the next runner finds it interrupted, as after a crash


class SlowRestore(Restore):
    """A restore whose pg tool runs a second, watched."""

    def run(self, ctx: StepContext) -> StepResult:
        done = run_tool(["sleep", "1"], conn=None, timeout=ctx.remaining(), watch=lambda: "1 MB")
        return StepResult(summary=f"sleep exited {done.returncode}")


def test_a_step_inside_a_long_child_process_tells_its_progress_line_how_it_goes(
    store: Store, config: RollbackConfig, script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voice, "SAY_SECONDS", 0.2)
    restore = SlowRestore()
    planner = Planner(factory=lambda params: RestoreTarget(script, restore))
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    runner, progress = make_runner(store, workflow, config, planner)
    assert runner.execute(run.id)
    said = [line for kind, line in progress.calls if kind == "step_output"]
    lines = [line for line in said if line.startswith("sleep still running after ")]
    assert len(lines) >= 2 and all(line.endswith(": 1 MB") for line in lines), said
