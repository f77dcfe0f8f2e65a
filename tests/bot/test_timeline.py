"""The timeline and the RCA template are filled from what the bot recorded."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.application.reviews import Reviews
from bot.application.timeline import duration, moments, rca_template
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner
from bot.execution.workflow import BREAK_GLASS_PHRASE, Workflow
from bot.persistence.store import Store
from tests.fakes.config import ALICE, BOB, CAROL, Clock


def test_rca_template_has_summary_and_timeline_from_the_audit_log(
    store: Store, workflow: Workflow, planner: Planner, clock: Clock
) -> None:
    env = workflow.config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target="app", point="1")
    detected = clock.now - timedelta(minutes=4)
    incident, run = workflow.request(
        plan=plan,
        requester=ALICE,
        severity=Severity.HIGH,
        answers=Answers(functional=False, data_at_risk=False, severe_impact=True),
        summary="Calls drop after 10 seconds",
        detected_at=detected,
    )
    clock.advance(minutes=2)
    workflow.approve(run.id, user=BOB)
    clock.advance(seconds=5)
    Runner(
        store=store,
        workflow=workflow,
        config=workflow.config,
        planner=planner,
        progress=NullProgress(),
    ).run_pending()
    events = store.events.of(incident.id)
    runs = store.runs.find(incident_id=incident.id)
    text = rca_template(incident, runs, events)
    assert f"- **Incident ID**: {incident.id}" in text
    assert "- **Impact**: Calls drop after 10 seconds" in text
    assert "- **Duration**: 6m 05s" in text
    assert "- **Rollback Time**: 0s" in text
    labels = [m.label for m in moments(incident, events)]
    assert labels[0] == "Issue first detected"
    assert "Rollback decision made: rollback requested by <@UALICE0001>" in labels
    assert "Rollback approved by <@UBOB000001>" in labels
    assert labels.index("Rollback initiated") < labels.index("Rollback completed")
    assert "## Root Cause" in text and "## Action Items" in text


def test_durations_read_like_people_write_them() -> None:
    assert duration(timedelta(seconds=42)) == "42s"
    assert duration(timedelta(minutes=3, seconds=5)) == "3m 05s"
    assert duration(timedelta(hours=1, minutes=2)) == "1h 02m"
    assert duration(None) == "n/a"


def test_communications_are_on_the_timeline(store: Store) -> None:
    incident = store.incidents.create(
        environment="prod", target="app", severity="high", source="slack", opened_by="UA1"
    )
    store.events.add(
        incident_id=incident.id,
        kind="step.succeeded",
        detail={"name": "http.status_page", "summary": "status page set to operational"},
    )
    labels = [m.label for m in moments(incident, store.events.of(incident.id))]
    assert "Status page updated: status page set to operational" in labels


def test_rca_times_are_in_the_given_zone_with_dates_and_people_by_name(store: Store) -> None:
    incident = store.incidents.create(
        environment="prod", target="app", severity="high", source="slack", opened_by=ALICE
    )
    events = store.events.of(incident.id)
    names = {ALICE: "Alice Doe"}
    text = rca_template(
        incident, [], events, zone=ZoneInfo("Asia/Kolkata"), names=lambda u: names.get(u, u)
    )
    opened = incident.created_at.astimezone(ZoneInfo("Asia/Kolkata"))
    assert f"- **{opened:%Y-%m-%d %H:%M:%S} IST**: Investigation started" in text
    assert "(incident opened by Alice Doe)" in text and "- **Opened by**: Alice Doe" in text
    assert f"- **Date/Time**: {opened:%Y-%m-%d %H:%M:%S} IST" in text
    assert "<@" not in rca_template(incident, [], events)  # default: ids, no Slack markup


def test_break_glass_review_is_on_the_timeline_and_in_the_rca(
    store: Store, workflow: Workflow, planner: Planner, clock: Clock
) -> None:
    env = workflow.config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target="app", point="1")
    incident, run = workflow.request(
        plan=plan,
        requester=ALICE,
        severity=Severity.CRITICAL,
        answers=Answers(functional=False, data_at_risk=True),
        break_glass=True,
        confirmation=BREAK_GLASS_PHRASE,
    )
    reviews = Reviews(store, workflow.config)
    reviews.assign(run)
    clock.advance(hours=2)
    reviews.mark_reviewed(run.id, user=CAROL)
    labels = [m.label for m in moments(incident, store.events.of(incident.id))]
    assert f"Mandatory review assigned to <@{BOB}>" in labels
    assert labels[-1] == f"Break-glass rollback reviewed by <@{CAROL}>"
    names = {BOB: "Bob", CAROL: "Carol", ALICE: "Alice"}
    text = rca_template(
        incident,
        store.runs.find(incident_id=incident.id),
        store.events.of(incident.id),
        names=lambda u: names.get(u, u),
    )
    assert "- **Review**: break-glass rollback, mandatory review, assigned to Bob" in text
    assert "Break-glass rollback reviewed by Carol" in text
