"""The runner: durable step execution, failure handling, leases and resuming after a crash."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions.base import PermanentError, RollbackPoint
from bot.config import RollbackConfig
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store
from tests.fakes.processes import started
from tests.fakes.rows import set_run_fields
from tests.fakes.runners import approved_run, make_runner, states
from tests.fakes.targets import ScriptedTarget, script_log, write_script
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).parents[2]


def test_approved_run_executes_every_step_in_order_and_succeeds(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    run = approved_run(workflow, planner)
    runner, progress = make_runner(store, workflow, config, planner)
    assert runner.run_pending() == [run.id]
    assert script_log(script) == ["stop_workers", "undo", "status", "start_workers"]
    assert states(store, run.id) == [
        ("stop_workers", "succeeded"),
        ("undo", "succeeded"),
        ("status", "succeeded"),
        ("start_workers", "succeeded"),
    ]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded" and final.finished_at is not None
    assert progress.calls[0] == ("run_started", False)
    assert progress.calls[-1] == ("run_finished", "succeeded")
    assert ("step_output", "undo attempt 1: ok") in progress.calls


def test_a_run_is_executed_only_once(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    assert runner.run_pending() == []
    assert script_log(script).count("undo") == 1


def test_failed_step_stops_the_plan_but_always_steps_still_run(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    write_script(script, undo=["permanent"])
    run = approved_run(workflow, planner)
    runner, progress = make_runner(store, workflow, config, planner)
    runner.run_pending()
    assert script_log(script) == ["stop_workers", "undo", "start_workers"]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed" and final.needs_manual
    assert "step 2 (undo) failed: undo broke" in final.outcome
    assert "Manual intervention required" in final.outcome
    assert "Not run: status: scripted step" in final.outcome
    assert ("step_finished", ("undo", "failed")) in progress.calls
    # what runs now is read from the live system, not only worded from the step records
    assert "Production now: the rollback change may be half done (undo failed); read from " in (
        final.outcome
    )
    assert final.outcome.endswith("read from the live systems: app runs rev 2.")


class Unreadable(ScriptedTarget):
    """A target whose rollback fails and whose current version cannot be read afterwards."""

    def points(self) -> list[RollbackPoint]:
        if script_log(self.script_file).count("undo"):
            raise PermanentError("connection refused by the API server")
        return super().points()


def test_after_a_failure_a_target_that_cannot_be_read_is_said_so(
    store: Store, workflow: Workflow, config: RollbackConfig, script: Path
) -> None:
    write_script(script, undo=["permanent"])
    planner = Planner(factory=lambda params: Unreadable(script))
    run = approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed"
    assert final.outcome.endswith(
        "read from the live systems: app could not be read (connection refused by the API server)."
    )


def test_temporary_errors_are_retried_within_the_steps_deadline(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    write_script(script, undo=["temporary", "temporary", "ok"])
    run = approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    undo = store.steps.of(run.id)[1]
    assert undo.state == "succeeded"
    assert script_log(script).count("undo") == 3


def test_temporary_errors_past_the_deadline_fail_the_step(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    write_script(script, undo=["temporary"], _timeout=0.2)
    run = approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner, sleep=time.sleep)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed"
    assert "gave up: step deadline reached" in final.outcome


def test_plan_that_changed_after_approval_is_not_run(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    run = approved_run(workflow, planner)
    write_script(script, _label="a newer revision appeared")
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed"
    assert "plan changed after it was approved" in final.outcome
    assert script_log(script) == []


def test_a_plan_that_cannot_be_built_any_more_fails_the_run_once(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    run = approved_run(workflow, planner)
    write_script(script, _plan_raises="kubeconfig vanished")
    runner, _ = make_runner(store, workflow, config, planner)
    assert runner.run_pending() == [run.id]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed"
    assert "the plan can no longer be built: OSError: kubeconfig vanished" in final.outcome
    assert runner.run_pending() == []


def test_a_run_leased_by_another_runner_is_left_alone(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    run = approved_run(workflow, planner)
    assert store.leases.claim(run.id, owner="other-process", seconds=60)
    runner, _ = make_runner(store, workflow, config, planner)
    assert runner.run_pending() == []
    assert runner.execute(run.id) is False
    assert script_log(script) == []


def test_step_memory_is_saved_with_the_run(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner
) -> None:
    run = approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.memory["undo.done"] == 1


def crash_mid_step(store: Store, url: str, script: Path, run_id: str) -> None:
    """Run the run in a child runner and SIGKILL it inside the hanging step; lapse its lease."""
    with started(
        [sys.executable, "-m", "tests.fakes.crash_runner", url, str(script), run_id],
        stop_signal=signal.SIGKILL,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        wait_for(
            lambda: "undo" in script_log(script) or child.poll() is not None,
            timeout=60,
            what="the child runner to reach the step",
        )
        assert child.poll() is None, "the child runner exited before the step"
    # the killed runner's lease lapses (leases are timed on the database's clock)
    set_run_fields(store, run_id, lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_run_of_a_killed_process_resumes_a_step_that_is_safe_to_repeat(
    database_url: str, store: Store, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    live = Store(store.engine)
    workflow = Workflow(store=live, config=config)
    write_script(script, undo=["hang", "ok"])
    run = approved_run(workflow, planner)
    crash_mid_step(live, database_url, script, run.id)
    assert live.runs.get(run.id).state == "running"  # type: ignore[union-attr]
    runner, progress = make_runner(live, workflow, config, planner)
    assert runner.run_pending() == [run.id]
    final = live.runs.get(run.id)
    assert final is not None and final.state == "succeeded"
    assert progress.calls[0] == ("run_started", True)
    assert script_log(script) == ["stop_workers", "undo", "undo", "status", "start_workers"]
    assert final.memory["stop_workers.done"] == 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_run_of_a_killed_process_needs_a_person_when_the_step_is_not_safe_to_repeat(
    database_url: str, store: Store, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    live = Store(store.engine)
    workflow = Workflow(store=live, config=config)
    write_script(script, undo=["hang", "ok"], _not_idempotent=["undo"])
    run = approved_run(workflow, planner)
    crash_mid_step(live, database_url, script, run.id)
    runner, _ = make_runner(live, workflow, config, planner)
    runner.run_pending()
    final = live.runs.get(run.id)
    assert final is not None and final.state == "failed" and final.needs_manual
    assert "interrupted by a crash and is not safe to repeat" in final.outcome
    assert "Not run: status: scripted step" in final.outcome
    assert script_log(script) == ["stop_workers", "undo", "start_workers"]
