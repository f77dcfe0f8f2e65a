"""Monitoring opens Critical incidents once per target; it rolls back only after the veto."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.http import MetricsReading
from bot.application.failures import REARMED
from bot.application.flows import Flows
from bot.application.monitoring import Monitor, breaches
from bot.application.requests import ThreadNotOpened
from bot.config import RollbackConfig, parse_config
from bot.config_file import ConfigError
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store
from tests.fakes.config import BOB, Clock, config_dict
from tests.fakes.flows import RecordingThread

METRICS = {"error_rate_url": "http://127.0.0.1:9/error-rate"}


class Recorder(RecordingThread):
    """The Slack side of the flows monitoring goes through: what was opened and approved."""

    @property
    def opened_ids(self) -> list[str]:
        return self.opened

    @property
    def approved_ids(self) -> list[str]:
        return self.refreshed


def monitored(**prod: Any) -> RollbackConfig:
    settings = {"metrics": METRICS, "monitoring": {"target": "app", "poll_seconds": 30}}
    settings.update(prod)
    return parse_config(config_dict(**settings), path=Path("t.yml"))


def make_monitor(
    store: Store, planner: Planner, config: RollbackConfig, reading: MetricsReading
) -> tuple[Monitor, Recorder]:
    events = Recorder(store=store)
    flows = Flows(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=planner,
        thread=events,
    )
    monitor = Monitor(
        config=config, store=store, planner=planner, reader=lambda metrics: reading, flows=flows
    )
    return monitor, events


HIGH_ERRORS = MetricsReading(error_rate=62.0, response_time_ms=900.0)


def test_thresholds_crossed_are_said_in_the_procedures_words() -> None:
    env = monitored().environment("prod")
    assert breaches(env, MetricsReading(62.0, 6000.0)) == [
        "Error rate is 62% (threshold: 50%)",
        "Response time is 6000ms (threshold: 5000ms)",
    ]
    assert breaches(env, MetricsReading(5.0, 200.0)) == []
    assert breaches(env, MetricsReading(None, None)) == []


def test_poll_over_the_threshold_opens_a_critical_incident_for_the_monitored_target(
    store: Store, planner: Planner
) -> None:
    monitor, events = make_monitor(store, planner, monitored(), HIGH_ERRORS)
    (raised,) = monitor.poll()
    assert raised.opened
    incident = store.incidents.get(raised.incident_id)
    assert incident is not None
    assert (incident.severity, incident.source, incident.target) == (
        "critical",
        "monitoring",
        "app",
    )
    assert incident.summary == "EMERGENCY: Error rate is 62% (threshold: 50%)"
    (run,) = store.runs.find()
    assert run.requester == "monitoring" and run.state == "requested" and run.point == "1"
    assert events.opened_ids == [incident.id]


def test_poll_under_the_thresholds_opens_nothing(store: Store, planner: Planner) -> None:
    monitor, events = make_monitor(store, planner, monitored(), MetricsReading(1.0, 100.0))
    assert monitor.poll() == []
    assert store.runs.find() == [] and events.opened_ids == []


def test_a_second_alert_is_recorded_on_the_open_incident_not_a_new_one(
    store: Store, planner: Planner
) -> None:
    monitor, events = make_monitor(store, planner, monitored(), HIGH_ERRORS)
    (first,) = monitor.poll()
    (second,) = monitor.poll()
    assert not second.opened and second.incident_id == first.incident_id
    assert len(store.runs.find()) == 1 and len(events.opened_ids) == 1
    kinds = [e.kind for e in store.events.of(first.incident_id)]
    assert kinds.count("monitoring.alert") == 1


def test_without_auto_rollback_the_incident_waits_for_a_person(
    store: Store, planner: Planner, clock: Clock
) -> None:
    monitor, _ = make_monitor(store, planner, monitored(auto_rollback=False), HIGH_ERRORS)
    monitor.poll()
    clock.advance(minutes=10)
    assert monitor.approve_due() == []
    (run,) = store.runs.find()
    assert run.state == "requested"
    workflow = Workflow(store=store, config=monitor.config)
    assert workflow.approve(run.id, user=BOB).started


def test_auto_rollback_is_approved_by_monitoring_only_after_the_veto_window(
    store: Store, planner: Planner, clock: Clock
) -> None:
    config = monitored(auto_rollback=True, veto_seconds=120)
    monitor, events = make_monitor(store, planner, config, HIGH_ERRORS)
    monitor.poll()
    clock.advance(seconds=119)
    assert monitor.approve_due() == []
    clock.advance(seconds=2)
    (approved,) = monitor.approve_due()
    assert approved.state == "approved"
    assert events.approved_ids == [approved.id]
    kinds = [e.kind for e in store.events.of(approved.incident_id)]
    assert kinds[-1] == "run.auto_approved"


def test_the_veto_window_counts_from_the_alert_not_from_reading_the_target_and_planning(
    store: Store, planner: Planner, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = monitored(auto_rollback=True, veto_seconds=120)
    monitor, _ = make_monitor(store, planner, config, HIGH_ERRORS)
    arrived = clock()
    points = planner.points

    def slow_points(*args: Any, **kwargs: Any) -> Any:  # each read of the target takes 2 s
        clock.advance(seconds=2)
        return points(*args, **kwargs)

    monkeypatch.setattr(planner, "points", slow_points)
    raised = monitor.raise_incident(environment="prod", target="app", reason="errors")
    (run,) = store.runs.find()
    assert raised.opened and clock() > arrived
    assert run.auto_approve_at == arrived + timedelta(seconds=120)


def test_a_veto_within_the_window_stops_the_automatic_rollback(
    store: Store, planner: Planner, clock: Clock
) -> None:
    config = monitored(auto_rollback=True, veto_seconds=120)
    monitor, _ = make_monitor(store, planner, config, HIGH_ERRORS)
    monitor.poll()
    (run,) = store.runs.find()
    Workflow(store=store, config=config).reject(run.id, user=BOB, reason="false alarm")
    clock.advance(minutes=5)
    assert monitor.approve_due() == []
    assert store.runs.get(run.id).state == "rejected"  # type: ignore[union-attr]


def test_monitoring_can_never_approve_as_a_person(store: Store, planner: Planner) -> None:
    monitor, _ = make_monitor(store, planner, monitored(), HIGH_ERRORS)
    monitor.poll()
    (run,) = store.runs.find()
    with pytest.raises(Refused):
        Workflow(store=store, config=monitor.config).approve(run.id, user="monitoring")


def test_monitoring_target_must_exist_in_the_config() -> None:
    from bot.config_file import ConfigError

    with pytest.raises(ConfigError, match=r"monitoring\.target: no target named 'api'"):
        parse_config(config_dict(monitoring={"target": "api"}), path=Path("t.yml"))


def _finish(store: Store, config: RollbackConfig, run: Run) -> Run:
    workflow = Workflow(store=store, config=config)
    return workflow.finish(workflow.start(run), ok=True, outcome="rolled back")


def test_no_second_automatic_rollback_of_a_target_until_a_person_rearms_it(
    store: Store, planner: Planner, clock: Clock
) -> None:
    """The cooldown alone does not re-arm it: a flapping alert never loops rollbacks."""
    config = monitored(auto_rollback=True, veto_seconds=60, auto_rollback_cooldown_minutes=60)
    monitor, events = make_monitor(store, planner, config, HIGH_ERRORS)
    monitor.poll()
    clock.advance(seconds=61)
    (first,) = monitor.approve_due()
    _finish(store, config, first)
    clock.advance(minutes=90)  # well past the cooldown
    (raised,) = monitor.poll()
    assert raised.opened
    incident = store.incidents.get(raised.incident_id)
    assert incident is not None
    assert (
        "Automatic rollback held: automatic rollback of app is disarmed since monitoring "
        f"rolled it back itself in {first.incident_id}; a person re-arms it in App Home"
    ) in incident.summary
    held = [
        e for e in store.events.of(raised.incident_id) if e.kind == "monitoring.auto_rollback_held"
    ]
    assert len(held) == 1
    clock.advance(minutes=30)
    assert monitor.approve_due() == []
    second = store.runs.find(incident_id=raised.incident_id)[0]
    assert second.state == "requested" and events.approved_ids == [first.id]


def test_a_rollback_is_never_rolled_back_automatically_within_the_window(
    store: Store, planner: Planner, clock: Clock
) -> None:
    config = monitored(auto_rollback=True, veto_seconds=60, auto_rollback_cooldown_minutes=60)
    workflow = Workflow(store=store, config=config)
    env = config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target="app", point="1")
    _, run = workflow.request(
        plan=plan, requester="UALICE0001", severity=Severity.HIGH, answers=Answers(functional=False)
    )
    _finish(store, config, workflow.approve(run.id, user=BOB).run)
    clock.advance(minutes=5)
    monitor, _ = make_monitor(store, planner, config, HIGH_ERRORS)
    (raised,) = monitor.poll()
    incident = store.incidents.get(raised.incident_id)
    assert incident is not None and "never rolls back a rollback" in incident.summary
    clock.advance(minutes=10)
    assert monitor.approve_due() == []


def test_once_rearmed_and_past_the_cooldown_monitoring_rolls_back_automatically_again(
    store: Store, planner: Planner, clock: Clock
) -> None:
    config = monitored(auto_rollback=True, veto_seconds=60, auto_rollback_cooldown_minutes=60)
    monitor, _ = make_monitor(store, planner, config, HIGH_ERRORS)
    monitor.poll()
    clock.advance(seconds=61)
    (first,) = monitor.approve_due()
    _finish(store, config, first)
    store.events.add(
        incident_id=first.incident_id, run_id=first.id, kind=REARMED, actor=BOB, detail={}
    )
    clock.advance(minutes=90)
    (raised,) = monitor.poll()
    incident = store.incidents.get(raised.incident_id)
    assert incident is not None and "held" not in incident.summary
    clock.advance(seconds=61)
    (second,) = monitor.approve_due()
    assert second.incident_id == raised.incident_id


def test_a_resolved_alert_is_recorded_on_the_open_incident(store: Store, planner: Planner) -> None:
    monitor, _ = make_monitor(store, planner, monitored(), HIGH_ERRORS)
    (raised,) = monitor.poll()
    assert monitor.resolved(environment="prod", target="app", alert="HighErrorRate", ended_at="t")
    last = store.events.of(raised.incident_id)[-1]
    assert (last.kind, last.detail) == (
        "monitoring.resolved",
        {"alert": "HighErrorRate", "ended_at": "t"},
    )


@pytest.mark.parametrize("auto_rollback", [False, True], ids=["person", "auto"])
def test_a_monitoring_incident_whose_thread_slack_refuses_leaves_no_run_and_frees_the_target(
    store: Store, planner: Planner, clock: Clock, auto_rollback: bool
) -> None:
    config = monitored(auto_rollback=auto_rollback, veto_seconds=60)
    monitor, events = make_monitor(store, planner, config, HIGH_ERRORS)
    events.refuse = ThreadNotOpened("Slack refused (not_in_channel)", "Invite the bot.")
    (raised,) = monitor.poll()
    assert not raised.opened and "not_in_channel" in raised.message
    (run,) = store.runs.find()
    assert run.state == "cancelled" and raised.incident_id == run.incident_id
    assert store.runs.find(states=("requested", "approved")) == []
    assert store.runs.lock_holder(environment="prod", targets=["app"]) is None
    clock.advance(minutes=5)
    assert monitor.approve_due() == []  # nothing left to approve automatically
    events.refuse = None  # the bot was invited: the next alert opens a fresh incident
    (again,) = monitor.poll()
    assert again.opened and again.incident_id != run.incident_id
    assert events.opened_ids == [again.incident_id]


GOOD = MetricsReading(error_rate=1.0, response_time_ms=100.0)


def healthy_monitor(
    store: Store, planner: Planner, readings: list[MetricsReading]
) -> tuple[Monitor, Flows]:
    """A monitor whose poll reads `readings` in turn (the last one from then on)."""
    config = monitored(monitoring={"target": "app", "poll_seconds": 30, "healthy_after": "30m"})
    monitor, _ = make_monitor(store, planner, config, GOOD)
    monitor.reader = lambda metrics: readings.pop(0) if len(readings) > 1 else readings[0]
    return monitor, monitor.flows  # type: ignore[return-value]


def test_a_version_running_through_healthy_after_of_good_readings_becomes_known_healthy(
    store: Store, planner: Planner, clock: Clock, script: Path
) -> None:
    monitor, flows = healthy_monitor(store, planner, [GOOD])
    monitor.poll()  # the stretch starts with rev 2 running
    clock.advance(minutes=29)
    monitor.poll()
    assert store.versions.known(environment="prod", target="app").healthy is None
    clock.advance(minutes=2)
    monitor.poll()
    assert flows.offer("prod", "app").healthy_label == "rev 2"

    raw = json.loads(script.read_text())
    script.write_text(json.dumps({**raw, "_current": "3"}))  # a newer deploy, then it breaks
    offer = flows.offer("prod", "app")
    assert offer.default is not None and offer.default.label == "rev 2"  # not merely previous
    clock.advance(minutes=31)
    monitor.poll()  # another version runs now: its stretch starts over, nothing recorded
    assert store.versions.known(environment="prod", target="app").healthy_keys == (
        offer.default.key,
    )


def test_a_breach_or_an_unreadable_reading_starts_the_healthy_stretch_over(
    store: Store, planner: Planner, clock: Clock
) -> None:
    readings = [GOOD, HIGH_ERRORS, GOOD, GOOD]
    monitor, _ = healthy_monitor(store, planner, readings)
    monitor.poll()  # good: the stretch starts
    clock.advance(minutes=20)
    monitor.poll()  # a breach (an incident opens): the stretch is gone
    clock.advance(minutes=20)
    monitor.poll()  # good again: a new stretch starts here
    clock.advance(minutes=20)
    monitor.poll()  # 40 minutes after the first good reading, but only 20 of this stretch
    assert store.versions.known(environment="prod", target="app").healthy is None


def test_healthy_after_reads_durations_and_zero_turns_it_off() -> None:
    on = monitored(monitoring={"target": "app", "healthy_after": "1h30m"})
    off = monitored(monitoring={"target": "app", "healthy_after": 0})
    assert on.environment("prod").monitoring.healthy_after == 5400.0  # type: ignore[union-attr]
    assert off.environment("prod").monitoring.healthy_after == 0.0  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="healthy_after"):
        monitored(monitoring={"target": "app", "healthy_after": "soon"})
