"""The store: schema upgrades, the out-of-date refusal, ids and events (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.__main__ import main
from bot.config import parse_config
from bot.domain.decision import Answers, Severity
from bot.domain.plans import Plan
from bot.execution.workflow import Workflow
from bot.persistence.store import (
    SchemaOutOfDate,
    Store,
    downgrade,
    make_engine,
    require_current_schema,
    upgrade,
)
from tests.fakes.config import ALICE, Clock, config_dict


def test_bot_refuses_an_empty_database_and_names_the_fix(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    with pytest.raises(SchemaOutOfDate, match=r"no schema.*run `rollback-bot db upgrade` first"):
        require_current_schema(engine)


def test_bot_refuses_an_older_schema_revision(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaOutOfDate, match="schema revision 0000"):
        require_current_schema(engine)


def test_upgrade_creates_the_schema_and_is_idempotent(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    first = upgrade(engine)
    assert upgrade(engine) == first
    require_current_schema(engine)


def test_db_upgrade_command_creates_the_schema(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    assert main(["db", "upgrade"]) == 0
    assert "schema at revision" in capsys.readouterr().out
    require_current_schema(make_engine(empty_database_url))


def test_events_are_kept_in_the_order_they_happened(store: Store) -> None:
    incident = store.incidents.create(
        environment="prod", target="app", severity="high", source="slack", opened_by="UA1"
    )
    for kind in ("a", "b", "c"):
        store.events.add(incident_id=incident.id, kind=kind)
    assert [e.kind for e in store.events.of(incident.id)] == ["incident.opened", "a", "b", "c"]


def test_timestamps_come_back_in_utc(store: Store) -> None:
    incident = store.incidents.create(
        environment="prod", target="app", severity="high", source="slack", opened_by="UA1"
    )
    fetched = store.incidents.get(incident.id)
    assert fetched is not None
    assert fetched.created_at == store.clock()
    assert fetched.created_at.utcoffset() is not None


def test_step_values_returns_the_newest_recorded_measurements_first(
    store: Store, clock: Clock
) -> None:
    workflow = Workflow(store=store, config=parse_config(config_dict(), path=Path("t.yml")))
    plan = Plan(environment="prod", target="db", point=None, steps=())
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    for position, rate in enumerate([10.0, 30.0, 20.0]):
        clock.advance(seconds=1)
        store.steps.save(
            run,
            position=position,
            name="database.restore_backup",
            event_kind="step.succeeded",
            state="succeeded",
            finished_at=clock.now,
            data={"restore_bytes_per_second": rate},
        )
    assert store.steps.values("restore_bytes_per_second") == [20.0, 30.0, 10.0]
    assert store.steps.values("restore_bytes_per_second", limit=1) == [20.0]
    assert store.steps.values("nothing") == []


def test_upgrading_to_0002_moves_plan_notes_out_of_step_memory(empty_database_url: str) -> None:
    from alembic import command

    from bot.persistence.store import _alembic_config

    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incidents (id, created_at, environment, target, severity, source, "
                "opened_by, summary, answers, reason) VALUES ('INC-1', '2026-11-24 03:00:00', "
                "'prod', 'app', 'high', 'slack', 'U1', '', '{}', '')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, incident_id, environment, target, plan, plan_hash, "
                "requester, state, version, approvals_required, break_glass, review_required, "
                "force, needs_manual, outcome, created_at, expires_at, memory, slack) VALUES "
                "('r1', 'INC-1', 'prod', 'app', '[]', 'h', 'U1', 'running', 0, 1, false, false, "
                "false, false, '', '2026-11-24 03:00:00', '2026-11-24 04:00:00', "
                """'{"notes": ["forced"], "undo.done": 1}', '{}')"""
            )
        )
    upgrade(engine)
    run = Store(engine).runs.get("r1")
    assert run is not None
    assert run.notes == ["forced"] and run.memory == {"undo.done": 1}
    assert run.lease_generation == 0


def test_upgrading_to_0006_moves_the_veto_deadline_out_of_step_memory_and_back(
    empty_database_url: str,
) -> None:
    from alembic import command

    from bot.persistence.store import _alembic_config

    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0005")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incidents (id, created_at, environment, target, severity, source, "
                "opened_by, summary, answers, reason) VALUES ('INC-1', '2026-11-24 03:00:00', "
                "'prod', 'app', 'critical', 'monitoring', 'monitoring', '', '{}', '')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, incident_id, environment, target, plan, plan_hash, "
                "requester, state, version, approvals_required, break_glass, review_required, "
                "force, needs_manual, outcome, created_at, expires_at, memory, slack) VALUES "
                "('r1', 'INC-1', 'prod', 'app', '[]', 'h', 'monitoring', 'requested', 0, 1, "
                "false, false, false, false, '', '2026-11-24 03:00:00', '2026-11-24 04:00:00', "
                """'{"auto_approve_at": "2026-11-24T03:05:00+00:00", "x": 1}', '{}')"""
            )
        )
    upgrade(engine)
    store = Store(engine, clock=lambda: datetime(2026, 11, 24, 3, 6, tzinfo=UTC))
    run = store.runs.get("r1")
    assert run is not None
    assert run.auto_approve_at == datetime(2026, 11, 24, 3, 5, tzinfo=UTC)
    assert run.memory == {"x": 1}
    assert [r.id for r in store.runs.due_for_auto_approval()] == ["r1"]
    downgrade(engine, "0005")  # SQLite: with foreign keys unenforced meanwhile (0011)
    with engine.connect() as conn:
        memory = conn.execute(text("SELECT memory FROM runs WHERE id = 'r1'")).scalar_one()
    memory = json.loads(memory) if isinstance(memory, str) else memory
    assert memory == {"x": 1, "auto_approve_at": "2026-11-24T03:05:00+00:00"}
    engine.dispose()
