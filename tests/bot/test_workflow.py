"""The workflow: the two-person rule, idempotence, races, expiry, locks and break-glass.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bot.config import RollbackConfig, parse_config
from bot.domain.decision import Answers, Severity
from bot.domain.plans import Plan
from bot.execution.planner import Planner
from bot.execution.workflow import Refused, Workflow
from bot.persistence.store import Store, TargetBusy
from tests.fakes.config import ALICE, BOB, CAROL, MALLORY, Clock, config_dict
from tests.fakes.rows import set_run_fields

ANSWERS = Answers(functional=False, data_at_risk=False, severe_impact=True)


def plan_for(planner: Planner, config: RollbackConfig, target: str = "app") -> Plan:
    env = config.environment("prod")
    return planner.build(env_name="prod", env=env, target=target, point="1")


def request(workflow: Workflow, planner: Planner, target: str = "app", **kwargs: object):  # type: ignore[no-untyped-def]
    plan = plan_for(planner, workflow.config, target)
    return workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=ANSWERS, **kwargs
    )


def kinds(store: Store, incident_id: str) -> list[str]:
    return [e.kind for e in store.events.of(incident_id)]


def test_request_opens_an_incident_with_the_decision_and_a_requested_run(
    workflow: Workflow, planner: Planner, store: Store
) -> None:
    incident, run = request(workflow, planner)
    assert incident.id == "INC-20261124-030000"
    assert incident.recommendation == "rollback_recommended"
    assert run.state == "requested"
    assert [s["name"] for s in run.plan] == ["stop_workers", "undo", "status", "start_workers"]
    assert kinds(store, incident.id) == ["incident.opened", "run.requested"]


def test_incident_ids_stay_unique_within_the_same_second(
    workflow: Workflow, planner: Planner
) -> None:
    first, _ = request(workflow, planner, "app")
    second, _ = request(workflow, planner, "db")
    assert first.id == "INC-20261124-030000"
    assert second.id == "INC-20261124-030000-2"


def test_requester_cannot_approve_their_own_rollback(workflow: Workflow, planner: Planner) -> None:
    _, run = request(workflow, planner)
    with pytest.raises(Refused, match="a second person must approve"):
        workflow.approve(run.id, user=ALICE)
    assert workflow.store.runs.get(run.id).state == "requested"  # type: ignore[union-attr]


def test_non_approver_cannot_approve(workflow: Workflow, planner: Planner) -> None:
    _, run = request(workflow, planner)
    with pytest.raises(Refused, match="not an approver for prod"):
        workflow.approve(run.id, user=MALLORY)
    assert workflow.store.runs.get(run.id).state == "requested"  # type: ignore[union-attr]


def test_approver_through_a_user_group_counts(workflow: Workflow, planner: Planner) -> None:
    _, run = request(workflow, planner)
    outcome = workflow.approve(run.id, user=MALLORY, user_groups=frozenset({"SDBAS00001"}))
    assert outcome.started
    assert outcome.run.state == "approved"


def test_second_person_approves_and_the_run_is_approved_once(
    workflow: Workflow, planner: Planner, store: Store
) -> None:
    incident, run = request(workflow, planner)
    outcome = workflow.approve(run.id, user=BOB)
    assert outcome.started and outcome.run.state == "approved"
    assert outcome.run.approved_at is not None
    assert [a for a, _ in workflow.approvals(outcome.run)] == [BOB]
    assert kinds(store, incident.id)[-1] == "run.approved"


def test_same_approver_clicking_twice_changes_nothing_the_second_time(
    workflow: Workflow, planner: Planner, store: Store
) -> None:
    incident, run = request(workflow, planner)
    workflow.approve(run.id, user=BOB)
    events = kinds(store, incident.id)
    with pytest.raises(Refused, match="already approved"):
        workflow.approve(run.id, user=BOB)
    assert kinds(store, incident.id) == events


def test_two_approvals_required_need_two_distinct_people(store: Store, planner: Planner) -> None:
    config = parse_config(config_dict(approvals_required=2), path=Path("t.yml"))
    workflow = Workflow(store=store, config=config)
    _, run = request(workflow, planner)
    first = workflow.approve(run.id, user=BOB)
    assert not first.started and "1 more approver" in first.message
    with pytest.raises(Refused, match="already approved"):
        workflow.approve(run.id, user=BOB)
    second = workflow.approve(run.id, user=CAROL)
    assert second.started and second.approvals == 2


def test_approval_after_the_ttl_is_refused_and_the_run_expires(
    workflow: Workflow, planner: Planner, clock: Clock
) -> None:
    _, run = request(workflow, planner)
    clock.advance(minutes=31)
    with pytest.raises(Refused, match="expired"):
        workflow.approve(run.id, user=BOB)
    assert workflow.store.runs.get(run.id).state == "expired"  # type: ignore[union-attr]


def test_an_approval_older_than_the_ttl_no_longer_counts(
    store: Store, planner: Planner, clock: Clock
) -> None:
    config = parse_config(
        config_dict(approvals_required=2, approval_ttl_minutes=10), path=Path("t.yml")
    )
    workflow = Workflow(store=store, config=config)
    _, run = request(workflow, planner)
    workflow.approve(run.id, user=BOB)
    clock.advance(minutes=9)
    set_run_fields(store, run.id, expires_at=clock.now + __import__("datetime").timedelta(hours=1))
    clock.advance(minutes=2)
    outcome = workflow.approve(run.id, user=CAROL)
    assert not outcome.started
    assert outcome.approvals == 1


def test_expire_due_marks_stale_requests_expired(
    workflow: Workflow, planner: Planner, clock: Clock, store: Store
) -> None:
    incident, run = request(workflow, planner)
    assert workflow.expire_due() == []
    clock.advance(minutes=30, seconds=1)
    (expired,) = workflow.expire_due()
    assert expired.id == run.id and expired.state == "expired"
    assert kinds(store, incident.id)[-1] == "run.expired"


def test_changed_plan_needs_a_new_approval(workflow: Workflow, planner: Planner) -> None:
    _, run = request(workflow, planner)
    with pytest.raises(Refused, match="plan changed"):
        workflow.approve(run.id, user=BOB, current_plan_hash="0" * 64)
    assert workflow.store.runs.get(run.id).state == "requested"  # type: ignore[union-attr]


def test_plan_hash_changes_when_a_step_description_changes(
    planner: Planner, config: RollbackConfig, script: Path
) -> None:
    before = plan_for(planner, config).hash
    script.write_text('{"_label": "rev 3 appeared"}')
    assert plan_for(Planner(factory=planner.factory), config).hash != before


def test_only_one_active_run_per_target(workflow: Workflow, planner: Planner) -> None:
    incident, _ = request(workflow, planner, "app")
    with pytest.raises(TargetBusy, match=f"already being rolled back in {incident.id}"):
        request(workflow, planner, "app")
    assert [r.incident_id for r in workflow.store.runs.find()] == [incident.id]
    assert workflow.store.incidents.get("INC-20261124-030000-2") is None


def test_full_rollback_is_refused_while_a_member_is_busy(
    workflow: Workflow, planner: Planner
) -> None:
    incident, _ = request(workflow, planner, "db")
    with pytest.raises(TargetBusy) as info:
        request(workflow, planner, "full")
    assert info.value.incident_id == incident.id


def test_target_is_free_again_after_a_rejection(workflow: Workflow, planner: Planner) -> None:
    _, run = request(workflow, planner)
    rejected = workflow.reject(run.id, user=BOB, reason="fix forward instead")
    assert rejected.state == "rejected"
    _, again = request(workflow, planner)
    assert again.state == "requested"


def test_requester_cannot_reject_but_can_cancel(workflow: Workflow, planner: Planner) -> None:
    _, run = request(workflow, planner)
    with pytest.raises(Refused, match="requester can cancel"):
        workflow.reject(run.id, user=ALICE)
    assert workflow.cancel(run.id, user=ALICE).state == "cancelled"


def test_transitions_not_allowed_from_the_current_state_are_refused(
    workflow: Workflow, planner: Planner
) -> None:
    _, run = request(workflow, planner)
    workflow.reject(run.id, user=BOB)
    with pytest.raises(Refused, match="this rollback is rejected"):
        workflow.approve(run.id, user=CAROL)
    with pytest.raises(Refused, match="can no longer be cancelled"):
        workflow.cancel(run.id, user=ALICE)
    fresh = workflow.store.runs.get(run.id)
    assert fresh is not None
    with pytest.raises(Refused, match="cannot become succeeded"):
        workflow.finish(fresh, ok=True, outcome="x")


def test_break_glass_approves_at_once_and_marks_the_run_for_review(
    workflow: Workflow, planner: Planner, store: Store
) -> None:
    incident, run = request(workflow, planner, break_glass=True, confirmation="EMERGENCY")
    assert run.state == "approved"
    assert run.review_required
    assert kinds(store, incident.id)[-1] == "run.break_glass"


def test_break_glass_needs_the_typed_confirmation(workflow: Workflow, planner: Planner) -> None:
    with pytest.raises(Refused, match="typed exactly: EMERGENCY"):
        request(workflow, planner, break_glass=True, confirmation="emergency")
    assert workflow.store.runs.find() == []


def test_break_glass_is_refused_where_the_environment_does_not_allow_it(
    store: Store, planner: Planner
) -> None:
    workflow = Workflow(
        store=store, config=parse_config(config_dict(break_glass=False), path=Path("t.yml"))
    )
    with pytest.raises(Refused, match="break-glass is not allowed in prod"):
        request(workflow, planner, break_glass=True, confirmation="EMERGENCY")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_approvers_at_the_same_instant_give_exactly_one_transition(
    workflow: Workflow, planner: Planner, store: Store
) -> None:
    for _ in range(5):
        incident, run = request(workflow, planner, "db")
        results = race_approvals(workflow, run.id, (BOB, CAROL))
        approved_events = [k for k in kinds(store, incident.id) if k == "run.approved"]
        assert approved_events == ["run.approved"]
        assert sum(1 for r in results if isinstance(r, Refused)) == 1
        workflow.cancel(run.id, user=ALICE)


def race_approvals(workflow: Workflow, run_id: str, users: tuple[str, ...]) -> list[object]:
    """Let every user approve at the same instant; return what each got."""
    barrier = threading.Barrier(len(users))
    results: list[object] = []

    def approve(user: str) -> None:
        barrier.wait()
        try:
            results.append(workflow.approve(run_id, user=user))
        except Refused as exc:
            results.append(exc)

    threads = [threading.Thread(target=approve, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_losing_the_target_race_leaves_no_incident_record(
    workflow: Workflow, planner: Planner, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = request(workflow, planner, "app")
    real = store.runs.lock_holder
    answers = iter([None])  # the pre-check sees a free target; the insert then finds it taken

    def lock_holder(**kwargs: object) -> str | None:
        return next(answers, real(**kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(store.runs, "lock_holder", lock_holder)
    with pytest.raises(TargetBusy):
        request(workflow, planner, "app")
    assert store.incidents.get("INC-20261124-030000-2") is None
    assert store.events.of("INC-20261124-030000-2") == []
    assert [run.incident_id for run in store.runs.find()] == [first.id]
