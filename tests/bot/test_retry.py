"""Retry failed step, on SQLite and PostgreSQL: a failed run approved again by a second person
runs its stored plan from the failed step; refused while another rollback holds the target,
and for a run that did not fail (issue 15, point 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.application.flows import Flows
from bot.domain.aftermath import retry_positions
from bot.domain.states import RunState, StepState
from bot.execution.planner import Planner
from bot.execution.workflow import Refused
from bot.persistence.store import StepView, Store
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.flows import RecordingThread, make_flows, request
from tests.fakes.runners import make_runner, states
from tests.fakes.targets import script_log, write_script


@pytest.fixture
def thread(store: Store) -> RecordingThread:
    return RecordingThread(store=store)


def _failed(flows: Flows, store: Store, planner: Planner) -> str:
    opened = flows.open_incident(request())
    flows.approve(opened.run.id, user=BOB)
    runner, _ = make_runner(store, flows.workflow, flows.config, planner)
    runner.run_pending()
    run = store.runs.get(opened.run.id)
    assert run is not None and run.state == RunState.FAILED
    return run.id


def test_retry_reruns_from_the_failed_step_and_takes_the_target_again(
    store: Store, planner: Planner, script: Path, thread: RecordingThread
) -> None:
    write_script(script, undo=["permanent", "ok"])
    flows = make_flows(store, planner, thread)
    run_id = _failed(flows, store, planner)
    assert store.runs.lock_holder(environment="prod", targets=["app"]) is None
    retried = flows.failures.retry_failed(run_id, user=CAROL)
    assert retried.state == RunState.APPROVED and retried.retries == 1
    assert store.runs.lock_holder(environment="prod", targets=["app"]) == retried.incident_id
    assert thread.decisions == [run_id]
    assert store.steps.of(run_id) == []  # undo failed: every step from it, and workers stop again
    runner, _ = make_runner(store, flows.workflow, flows.config, planner)
    runner.run_pending()
    run = store.runs.get(run_id)
    assert run is not None and run.state == RunState.SUCCEEDED
    assert script_log(script) == [
        "stop_workers", "undo", "start_workers",
        "stop_workers", "undo", "status", "start_workers",
    ]  # fmt: skip
    assert states(store, run_id) == [
        ("stop_workers", "succeeded"),
        ("undo", "succeeded"),
        ("status", "succeeded"),
        ("start_workers", "succeeded"),
    ]
    assert store.runs.lock_holder(environment="prod", targets=["app"]) is None


def test_retry_is_refused_while_another_rollback_holds_the_target(
    store: Store, planner: Planner, script: Path, thread: RecordingThread
) -> None:
    write_script(script, status=["permanent"])
    flows = make_flows(store, planner, thread)
    run_id = _failed(flows, store, planner)
    other = flows.open_incident(request(requester=CAROL))
    with pytest.raises(Refused, match=f"already being rolled back in {other.incident.id}"):
        flows.failures.retry_failed(run_id, user=BOB)
    run = store.runs.get(run_id)
    assert run is not None and run.state == RunState.FAILED


def test_only_a_failed_run_is_retried_and_not_by_its_requester(
    store: Store, planner: Planner, script: Path, thread: RecordingThread
) -> None:
    write_script(script, status=["permanent"])
    flows = make_flows(store, planner, thread)
    run_id = _failed(flows, store, planner)
    with pytest.raises(Refused, match="another approver must retry it"):
        flows.failures.retry_failed(run_id, user=ALICE)
    flows.failures.retry_failed(run_id, user=BOB)
    with pytest.raises(Refused, match="only a failed one can be retried"):
        flows.failures.retry_failed(run_id, user=CAROL)
    retries = [
        e for e in store.events.of(store.runs.get(run_id).incident_id) if e.kind == "run.retry"
    ]  # type: ignore[union-attr]
    assert [e.actor for e in retries] == [BOB]


def _step(position: int, phase: str, name: str, *, always: bool = False) -> dict[str, Any]:
    return {
        "position": position,
        "phase": phase,
        "name": name,
        "description": name,
        "always": always,
        "idempotent": True,
        "timeout": 60.0,
        "source": None,
        "spec": {},
    }


MAINTAINED = [
    _step(0, "maintenance", "http.maintenance_on"),
    _step(1, "rollback", "database.swap"),
    _step(2, "maintenance", "http.maintenance_off", always=True),
    _step(3, "communicate", "http.status_page"),
    _step(4, "keep", "database.pre_rollback_backup"),
]


def _records(*states: StepState) -> list[StepView]:
    return [
        StepView(i, MAINTAINED[i]["name"], state, 1, None, None, "", "", {})
        for i, state in enumerate(states)
    ]


@pytest.mark.parametrize("failed", [3, 4], ids=["status page", "kept dump"])
def test_a_retry_after_maintenance_went_off_as_planned_does_not_put_the_site_down_again(
    failed: int,
) -> None:
    ok = StepState.SUCCEEDED
    states = [ok] * failed + [StepState.FAILED]
    again = retry_positions(MAINTAINED, _records(*states), maintenance_on=False)
    assert again == list(range(failed, len(MAINTAINED)))


def test_a_retry_of_the_change_puts_maintenance_on_again_when_the_failure_path_turned_it_off() -> (
    None
):
    ok = StepState.SUCCEEDED
    records = _records(ok, StepState.FAILED, ok)
    assert retry_positions(MAINTAINED, records, maintenance_on=False) == [0, 1, 2, 3, 4]
    assert retry_positions(MAINTAINED, records, maintenance_on=True) == [1, 2, 3, 4]
