"""The application layer on SQLite and PostgreSQL, with a Slack side that records or refuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.application.flows import Flows
from bot.application.requests import ThreadNotOpened
from bot.domain.plans import Plan
from bot.execution.planner import Planner
from bot.execution.workflow import Refused
from bot.persistence.store import Store
from tests.fakes.config import ALICE, BOB, MALLORY, Clock
from tests.fakes.flows import RecordingThread, make_flows, request
from tests.fakes.targets import write_script


@pytest.fixture
def thread(store: Store) -> RecordingThread:
    return RecordingThread(store=store)


@pytest.fixture
def flows(store: Store, planner: Planner, thread: RecordingThread) -> Flows:
    return make_flows(store, planner, thread)


def test_open_incident_requests_the_run_opens_the_thread_and_records_the_ticks(
    flows: Flows, store: Store, thread: RecordingThread
) -> None:
    opened = flows.open_incident(request(ticked=frozenset({"backup_verified"})))
    assert opened.run.state == "requested" and not opened.started
    assert thread.opened == [opened.incident.id]
    kinds = [(e.kind, e.detail.get("item")) for e in store.events.of(opened.incident.id)]
    assert ("prerollback.check", "backup_verified") in kinds
    assert store.runs.lock_holder(environment="prod", targets=["app"]) == opened.incident.id


def test_thread_refused_withdraws_the_run_frees_the_target_and_closes_the_incident(
    flows: Flows, store: Store, thread: RecordingThread
) -> None:
    thread.refuse = ThreadNotOpened("Slack refused (not_in_channel)", "Invite the bot.")
    with pytest.raises(ThreadNotOpened, match="Invite the bot"):
        flows.open_incident(request())
    (run,) = store.runs.find()
    assert run.state == "cancelled"
    events = store.events.of(run.incident_id)
    cancelled = next(e for e in events if e.kind == "run.cancelled")
    assert "not_in_channel" in cancelled.detail["reason"]
    assert any(e.kind == "incident.closed" for e in events)
    incident = store.incidents.get(run.incident_id)
    assert incident is not None and incident.resolved_at is not None
    assert store.runs.lock_holder(environment="prod", targets=["app"]) is None
    thread.refuse = None
    assert flows.open_incident(request()).run.state == "requested"


def test_busy_target_is_refused_before_anything_is_opened(
    flows: Flows, thread: RecordingThread
) -> None:
    first = flows.open_incident(request())
    with pytest.raises(Refused, match=first.incident.id):
        flows.open_incident(request(target="full"))
    assert thread.opened == [first.incident.id]


def test_unbuildable_plan_is_refused(flows: Flows, store: Store) -> None:
    with pytest.raises(Refused, match="plan could not be built"):
        flows.open_incident(request(point="7"))
    assert store.runs.find() == []


def test_approve_counts_only_for_the_plan_requested(
    flows: Flows, store: Store, script: Path, thread: RecordingThread
) -> None:
    run = flows.open_incident(request()).run
    write_script(script, _label="a newer revision appeared")
    with pytest.raises(Refused, match="plan changed since it was requested") as refused:
        flows.approve(run.id, user=BOB)
    said = str(refused.value)  # the real change, not a guess at it
    assert "no longer planned: " in said and "now planned: " in said
    assert "a newer revision appeared" in said
    assert (store.runs.get(run.id) or run).state == "requested"
    assert thread.stale_told == [run.id]
    write_script(script)
    outcome = flows.approve(run.id, user=BOB)
    assert outcome.run.plan_stale_at is None
    assert outcome.started and outcome.run.state == "approved"
    assert flows.wake_runner.is_set()
    assert [m.kind for m in store.outbox.messages(run.id)] == [
        "run.changed"
    ]  # redrawn by the outbox


def test_requester_and_outsiders_cannot_approve(flows: Flows) -> None:
    run = flows.open_incident(request()).run
    with pytest.raises(Refused, match="second person"):
        flows.approve(run.id, user=ALICE)
    with pytest.raises(Refused, match="not an approver"):
        flows.approve(run.id, user=MALLORY)


def test_break_glass_opens_already_approved_and_wakes_the_runner(flows: Flows) -> None:
    opened = flows.open_incident(request(break_glass=True, confirmation="EMERGENCY"))
    assert opened.started
    assert flows.wake_runner.is_set()


def test_cancel_by_incident_refuses_outsiders_and_runs_already_started(
    flows: Flows, store: Store
) -> None:
    opened = flows.open_incident(request())
    run = flows.cancellable_run(opened.incident.id)
    with pytest.raises(Refused, match="only the requester or an approver"):
        flows.cancel(run.id, user=MALLORY)
    flows.approve(run.id, user=BOB)
    flows.workflow.start(store.runs.get(run.id) or run)
    with pytest.raises(Refused, match="is running; it can no longer be cancelled"):
        flows.cancellable_run(opened.incident.id)
    with pytest.raises(Refused, match="no incident INC-20000101-000000"):
        flows.cancellable_run("INC-20000101-000000")


def test_the_veto_window_counts_from_the_alerts_arrival_not_from_the_end_of_planning(
    store: Store,
    planner: Planner,
    thread: RecordingThread,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flows = make_flows(
        store, planner, thread, auto_rollback=True, veto_seconds=60, monitoring={"target": "app"}
    )
    arrived = clock()
    build = planner.build

    def slow_build(**kwargs: Any) -> Plan:  # reading the target takes 3 s
        clock.advance(seconds=3)
        return build(**kwargs)

    monkeypatch.setattr(planner, "build", slow_build)
    opened = flows.open_from_alert(environment="prod", target="app", reason="errors at 9%")
    assert clock() >= arrived + timedelta(seconds=3)
    assert opened.run.auto_approve_at == arrived + timedelta(seconds=60)
    clock.advance(seconds=56)  # 59 s after the alert
    assert flows.auto_approve_due() == []
    clock.advance(seconds=1)
    assert [r.id for r in flows.auto_approve_due()] == [opened.run.id]


def test_alert_opens_once_per_busy_target_and_auto_approves_after_the_veto_window(
    store: Store, planner: Planner, thread: RecordingThread, clock: Clock
) -> None:
    flows = make_flows(
        store, planner, thread, auto_rollback=True, veto_seconds=60, monitoring={"target": "app"}
    )
    opened = flows.open_from_alert(environment="prod", target="app", reason="errors at 9%")
    assert opened.run.requester == "monitoring" and opened.run.auto_approve_at is not None
    assert "auto_approve_at" not in opened.run.memory
    with pytest.raises(Refused, match=f"already handled in {opened.incident.id}"):
        flows.open_from_alert(environment="prod", target="app", reason="still 9%")
    assert any(e.kind == "monitoring.alert" for e in store.events.of(opened.incident.id))
    assert flows.auto_approve_due() == []
    clock.advance(seconds=61)
    (approved,) = flows.auto_approve_due()
    assert approved.state == "approved"
    assert any(e.kind == "run.auto_approved" for e in store.events.of(opened.incident.id))
    assert flows.auto_approve_due() == []


def test_ticking_the_checklist_records_only_what_changed(
    flows: Flows, store: Store, thread: RecordingThread
) -> None:
    run = flows.open_incident(request()).run
    assert flows.tick_checklist(run.id, user=BOB, selected=frozenset({"auth", "core"})) == 2
    both, core = frozenset({"auth", "core"}), frozenset({"core"})
    assert flows.tick_checklist(run.id, user=BOB, selected=core, shown=both) == 1
    assert flows.tick_checklist(run.id, user=BOB, selected=core, shown=core) == 0
    assert thread.checklists == [run.id] * 3
    with pytest.raises(Refused, match="only the requester and the approvers"):
        flows.tick_checklist(run.id, user=MALLORY, selected=both, shown=core)


def test_break_glass_run_already_started_when_the_thread_fails_goes_on_and_says_so(
    flows: Flows, store: Store, thread: RecordingThread
) -> None:
    thread.refuse = ThreadNotOpened("Slack refused (fatal_error)", "Try again.")
    thread.runner_first = flows.workflow
    with pytest.raises(ThreadNotOpened) as raised:
        flows.open_incident(request(break_glass=True, confirmation="EMERGENCY"))
    assert not raised.value.withdrawn
    assert "already started and goes on" in raised.value.advice
    assert "/rollback status INC-" in raised.value.advice
    (run,) = store.runs.find()
    assert run.state == "running"
