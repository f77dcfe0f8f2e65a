"""Recovery metrics from the audit log: time to detect, decide, approve and recover."""

from __future__ import annotations

from bot.application.timeline import rca_template
from bot.domain.recovery import recovery, spoken, summary_lines
from bot.persistence.store import Store
from tests.fakes.config import BOB, Clock
from tests.fakes.runners import incident_with_history


def test_each_phase_is_measured_from_the_audit_log(store: Store, clock: Clock) -> None:
    incident = incident_with_history(store, clock)
    rec = recovery(incident, store.events.of(incident.id))
    assert [p.name for p in rec.phases] == ["detect", "decide", "approve", "recover"]
    assert [rec.seconds(p) for p in ("detect", "decide", "approve", "recover")] == [
        120.0,
        30.0,
        45.0,
        75.0,
    ]
    assert rec.total_seconds == 270.0


def test_a_failed_rollback_has_no_time_to_recover(store: Store, clock: Clock) -> None:
    incident = incident_with_history(store, clock, fail=True)
    rec = recovery(incident, store.events.of(incident.id))
    assert rec.seconds("approve") == 45.0
    assert rec.seconds("recover") is None and rec.total_seconds is None


def test_the_rca_summary_carries_the_recovery_times_and_names_the_chart(
    store: Store, clock: Clock
) -> None:
    incident = incident_with_history(store, clock)
    template = rca_template(incident, [], store.events.of(incident.id))
    summary = template.split("## Timeline")[0]
    assert "- **Time to detect**: 2 m 00 s" in summary
    assert "- **Time to decide**: 30 s" in summary
    assert "- **Time to approve**: 45 s" in summary
    assert "- **Time to recover**: 1 m 15 s" in summary
    assert "- **Detection to service restored**: 4 m 30 s" in summary
    assert f"- **Timeline chart**: {incident.id}-timeline.png" in summary


def test_durations_are_said_the_way_people_say_them() -> None:
    assert [spoken(s) for s in (None, 0, 45, 72, 3725, 90000)] == [
        "n/a",
        "0 s",
        "45 s",
        "1 m 12 s",
        "1 h 02 m",
        "1 d 1 h",
    ]


def test_summary_lines_say_n_a_for_a_phase_not_reached(store: Store, clock: Clock) -> None:
    incident = store.incidents.create(
        environment="prod", target="app", severity="high", source="slack", opened_by=BOB
    )
    lines = summary_lines(recovery(incident, store.events.of(incident.id)))
    assert lines[1] == "- **Time to decide**: n/a"
    assert lines[-1] == "- **Detection to service restored**: n/a"


def test_without_a_health_check_service_is_back_before_the_kept_dump_and_the_notices(
    store: Store, clock: Clock
) -> None:
    incident = store.incidents.create(
        environment="prod", target="db", severity="critical", source="human", opened_by=BOB
    )
    moves = [
        (0, "run.requested", {}),
        (10, "run.approved", {}),
        (20, "step.succeeded", {"position": 0, "name": "database.swap", "phase": "rollback"}),
        (5, "step.succeeded", {"position": 1, "name": "database.verify", "phase": "verify"}),
        (1, "step.succeeded", {"position": 2, "name": "http.status_page", "phase": "communicate"}),
        (
            300,
            "step.succeeded",
            {"position": 3, "name": "database.pre_rollback_backup", "phase": "keep"},
        ),
        (1, "run.succeeded", {}),
    ]
    for seconds, kind, detail in moves:
        clock.advance(seconds=seconds)
        store.events.add(incident_id=incident.id, kind=kind, actor=BOB, run_id="r1", detail=detail)

    rec = recovery(incident, store.events.of(incident.id))

    assert rec.seconds("recover") == 25.0  # the live database verified, not the dump's end
