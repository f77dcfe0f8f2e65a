"""Scheduled drills: the slot, when a drill is due, the config, the scheduler starting a
restore drill on the real PostgreSQL itself, skipping a held target, and the flags (a failed
drill, one slower than the RTO, an overdue one) in the listing and the metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bot.application.drill_schedule import (
    NOT_STARTED,
    SCHEDULER,
    DrillSchedules,
    is_due,
    last_slot,
)
from bot.application.drills import FLAGGED, DrillRecorder, Drills, DrillStatus
from bot.application.flows import Flows
from bot.config import DrillSchedule, RollbackConfig, parse_config
from bot.config_file import ConfigError
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Drill
from bot.persistence.store import Store
from bot.serving.drill_metrics import watch_drills
from handlers.drill_blocks import (
    drill_line,
    flagged_text,
    not_started_text,
    sparkline,
    trend_text,
)
from tests.fakes.config import ALICE, BOB, CAROL, Clock
from tests.fakes.flows import RecordingThread
from tests.fakes.pg import HOST, PORT, USER, damaged, dump
from tests.fakes.rows import set_drill_fields

pytest_plugins = ["tests.fakes.pg"]

WEEKLY = DrillSchedule(every=timedelta(days=7), at="Tue 10:00", rto=timedelta(minutes=15))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_latest_slot_is_the_last_such_weekday_and_time_at_or_before_now() -> None:
    assert last_slot(WEEKLY, at("2026-12-08 10:00")) == at("2026-12-08 10:00")  # a Tuesday
    assert last_slot(WEEKLY, at("2026-12-08 09:59")) == at("2026-12-01 10:00")
    assert last_slot(WEEKLY, at("2026-12-11 03:00")) == at("2026-12-08 10:00")
    daily = DrillSchedule(every=timedelta(days=1), at="10:00")
    assert last_slot(daily, at("2026-12-11 03:00")) == at("2026-12-10 10:00")


def test_a_drill_is_due_once_a_slot_and_every_other_slot_for_a_fortnightly_one() -> None:
    now = at("2026-12-08 10:05")
    assert is_due(WEEKLY, now=now, last_started=None)
    assert is_due(WEEKLY, now=now, last_started=at("2026-12-01 10:00:30"))  # last week's
    assert not is_due(WEEKLY, now=now, last_started=at("2026-12-08 10:00:30"))  # this one's
    fortnightly = WEEKLY.model_copy(update={"every": timedelta(days=14)})
    assert not is_due(fortnightly, now=now, last_started=at("2026-12-01 10:00:30"))
    assert is_due(fortnightly, now=now, last_started=at("2026-11-24 10:00:30"))


def env(targets: dict[str, Any]) -> dict[str, Any]:
    return {
        "incident_channel": "C0PRODUCT1",
        "approvers": {"users": [BOB, CAROL]},
        "targets": targets,
    }


def test_a_schedule_that_is_not_one_names_the_field_and_production_refuses_the_wrong_kind(
    tmp_path: Path,
) -> None:
    app = {"kind": "config", "directory": str(tmp_path), "backups": str(tmp_path)}
    bad = {**app, "drills": {"every": "7d", "at": "Tuesday at ten"}}
    with pytest.raises(ConfigError, match=r"targets\.app\.drills\.at: .*'Tuesday at ten'"):
        parse_config({"environments": {"qa": env({"app": bad})}}, path=Path("d.yml"))
    weekly = {**app, "drills": {"every": "7d", "at": "Tue 10:00", "rto": "15m"}}
    with pytest.raises(ConfigError, match=r"prod\.targets\.app\.drills: drills are not allowed"):
        parse_config({"environments": {"prod": env({"app": weekly})}}, path=Path("d.yml"))
    config = parse_config({"environments": {"qa": env({"app": weekly})}}, path=Path("d.yml"))
    assert config.environment("qa").target_drills == {"app": WEEKLY}


def scheduled(db: str, backups: Path) -> RollbackConfig:
    target = {
        "kind": "database",
        "connection": {"host": HOST, "port": PORT, "user": USER, "dbname": db},
        "backups": str(backups),
        "drills": {"every": "7d", "at": "Tue 02:00", "rto": "15m"},  # the clock: Tue 03:00
    }
    return parse_config({"environments": {"prod": env({"db": target})}}, path=Path("d.yml"))


def schedules_on(store: Store, config: RollbackConfig) -> DrillSchedules:
    flows = Flows(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=Planner(),
        thread=RecordingThread(store=store),
    )
    return DrillSchedules(Drills(flows))


def run_all(schedules: DrillSchedules) -> list[str]:
    drills = schedules.drills
    return Runner(
        store=drills.store,
        workflow=drills.flows.workflow,
        config=drills.config,
        planner=drills.flows.planner,
        progress=DrillRecorder(NullProgress(), drills.store, config=drills.config),
        sleep=lambda _: None,
    ).run_pending()


@pytest.mark.postgres
def test_the_scheduler_starts_a_due_restore_drill_itself_once_a_slot(
    voxflow_db: str, tmp_path: Path, store: Store, clock: Clock
) -> None:
    dump(voxflow_db, tmp_path, datetime(2026, 11, 24, 1, 0, tzinfo=UTC))
    schedules = schedules_on(store, scheduled(voxflow_db, tmp_path))

    (run,) = schedules.start_due()

    assert (run.state, run.requester) == ("approved", SCHEDULER)
    approved = [e for e in store.events.of(run.incident_id) if e.kind == "run.auto_approved"]
    assert [(e.actor, e.detail) for e in approved] == [
        (SCHEDULER, {"scheduled_for": "2026-11-24T02:00:00+00:00"})
    ]
    assert schedules.start_due() == []  # this slot's drill has started
    assert run_all(schedules) == [run.id]
    assert store.runs.get(run.id).state == "succeeded"  # type: ignore[union-attr]
    assert [m for m in store.outbox.messages(run.id) if m.kind == FLAGGED] == []  # within its RTO
    (status,) = schedules.drills.statuses()
    assert status.flags == [] and status.rto == timedelta(minutes=15)
    clock.advance(days=7)
    (again,) = schedules.start_due()  # next Tuesday's
    assert again.id != run.id


@pytest.mark.postgres
def test_the_scheduler_skips_a_target_an_incident_holds(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    dump(voxflow_db, tmp_path, datetime(2026, 11, 24, 1, 0, tzinfo=UTC))
    schedules = schedules_on(store, scheduled(voxflow_db, tmp_path))
    held = schedules.drills.open(environment="prod", target="db", requester=ALICE)
    set_drill_fields(store, held.run.id, created_at=datetime(2026, 11, 10, tzinfo=UTC))  # older

    assert schedules.start_due() == []

    assert [r.id for r in store.runs.find()] == [held.run.id]


@pytest.mark.postgres
def test_a_failed_scheduled_drill_is_flagged_in_the_listing_and_the_metrics(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    good = dump(voxflow_db, tmp_path, datetime(2025, 6, 1, 3, 0, tzinfo=UTC))
    damaged(good, "truncated_60")
    schedules = schedules_on(store, scheduled(voxflow_db, tmp_path))
    schedules.start_due()
    run_all(schedules)
    registry = CollectorRegistry()
    watch_drills(registry, schedules.drills.statuses)

    (status,) = schedules.drills.statuses()
    exported = generate_latest(registry).decode()

    assert status.flags == ["failed", "overdue"]
    run = store.runs.find()[0]
    (flagged,) = [m for m in store.outbox.messages(run.id) if m.kind == FLAGGED]
    assert flagged.detail["reasons"] == ["failed"]
    assert flagged_text(run, flagged.detail).startswith(
        ":warning: *Scheduled drill flagged*: db in prod failed"
    )
    assert ":warning:" in drill_line(status) and "*failed*" in drill_line(status)
    assert 'rollback_drill_flagged{environment="prod",reason="failed",target="db"} 1.0' in exported
    assert 'reason="overdue",target="db"} 1.0' in exported


def test_a_drill_slower_than_its_rto_is_flagged_and_the_trend_is_drawn() -> None:
    now = at("2026-12-08 12:00")
    drill = Drill(
        run_id="r",
        environment="prod",
        target="db",
        state="succeeded",
        recover_seconds=1000.0,
        created_at=now - timedelta(days=1),
        finished_at=now - timedelta(days=1),
        steps=[],
    )
    status = DrillStatus(
        "prod",
        "db",
        drill,
        drill,
        now,
        timedelta(days=7),
        rto=timedelta(minutes=15),
        trend=(250.0, 500.0, 1000.0),
        rollbacks=(600.0,),
    )

    assert status.flags == ["slower than the RTO"]
    assert status.line().endswith("; 16 m 40 s is over the RTO of 15 m 00 s")
    assert sparkline((250.0, 500.0, 1000.0)) == "▂▄█"
    assert trend_text(status) == "drills ▂▄█ 4 m 10 s → 16 m 40 s; real rollbacks █ last 10 m 00 s"
    assert "*slower than the RTO*" in drill_line(status)


def test_a_drill_that_cannot_be_planned_is_tried_again_only_after_a_while(
    tmp_path: Path, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    schedules = schedules_on(store, scheduled("voxflow", tmp_path))  # no dump at all

    tries = []
    for minutes in (0, 1, 9, 2):  # 0, 1, 10, 12 minutes after the first
        clock.advance(minutes=minutes)
        caplog.clear()
        assert schedules.start_due() == []
        tries.append("no backup to drill" in caplog.text)

    assert tries == [True, False, True, False]
    assert store.runs.find() == [] and store.drills.find() == []


def test_a_scheduled_drill_that_cannot_start_is_said_once_a_slot_with_why(
    tmp_path: Path, store: Store, clock: Clock
) -> None:
    config = scheduled("voxflow", tmp_path)  # no dump at all: never drilled
    first, second = schedules_on(store, config), schedules_on(store, config)  # two replicas

    assert first.start_due() == [] and second.start_due() == []
    clock.advance(minutes=11)  # tried again in the same slot: not said again
    assert first.start_due() == [] and second.start_due() == []

    (said,) = store.outbox.messages(None, kind=NOT_STARTED)
    assert said.run_id is None
    assert said.detail["slot"] == "2026-11-24T02:00:00+00:00"
    assert said.detail["never_drilled"] is True and "no backup to drill" in said.detail["reason"]
    text = not_started_text(said.detail)
    assert "*Scheduled drill not started*: db in prod" in text
    assert "It has never been drilled" in text and "tries again every 10 min" in text
    clock.advance(days=7)  # next Tuesday's slot, still no backup: said again
    assert first.start_due() == []
    assert len(store.outbox.messages(None, kind=NOT_STARTED)) == 2
