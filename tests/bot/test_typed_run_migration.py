"""Migration 0011: a run's facts move from its memory into typed columns, and back.

Each earlier schema revision gets rows as that revision's code wrote them (only the
columns it had), on SQLite and PostgreSQL; the upgrade to the newest revision must
carry every one over, and the downgrade must give the same rows back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from actions.base import Finding, Level
from bot.domain.states import OutboxState, RecheckState, RunKind, RunState, StepState, VersionState
from bot.domain.verdict import Verdict
from bot.persistence.store import MIGRATIONS, Store, downgrade, make_engine, upgrade


def _earlier_revisions() -> list[str]:
    """Every revision before 0011, oldest first, from the migration chain itself."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    chain = [s.revision for s in ScriptDirectory.from_config(config).walk_revisions()]
    return list(reversed(chain[chain.index("0011") + 1 :]))


EARLIER = _earlier_revisions()
AT = datetime(2026, 12, 1, 9, 0)  # noqa: DTZ001 (stored as the earlier schemas did: naive UTC)
VERDICT = Verdict(
    target="app",
    level=Level.RISKY,
    evidence=(Finding(Level.RISKY, "image not verified", "registry"),),
)
MARKER_STEP = {
    "position": 0,
    "phase": "drill",
    "name": "drill.marker",
    "description": "Drill marker",
    "always": False,
    "idempotent": True,
    "timeout": 60.0,
    "source": "app",
    "spec": {"target": "app", "ref": "4", "back_to": "3"},
    "label": "Drill marker",
}
MEMORIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # run id: (requester, state, memory as the code before 0011 kept it)
    "r-rollback": (
        "alice",
        "failed",
        {
            "versions": {
                "from": "rev 4 (v1.2.4)",
                "to": "rev 3 (v1.2.3)",
                "from_key": "app:1.2.4",
                "to_key": "app:1.2.3",
            },
            "verdicts": [VERDICT.as_json()],
            "plan_stale_at": "2026-12-01T10:00:00+00:00",
            "retries": 2,
            "leave_maintenance_on": True,
            "notify_customers": False,
            "pitr.scratch": "/var/tmp/x",  # step memory
        },
    ),
    "r-drill": (
        "bob",
        "succeeded",
        {
            "drill": {"forward_to": "4"},
            "versions": {"from": "rev 4", "to": "rev 3"},
            "verdicts": [],
            "drill.marker": "rev 4 (v1.2.4)",  # the marker step's own memory
        },
    ),
    "r-auto": ("monitoring", "requested", {"swap.db": "db_old"}),
    "r-full": ("carol", "running", {"versions": {"from": "", "to": "previous"}}),
}
COMMON = {
    "incident_id": "INC-1",
    "environment": "prod",
    "target": "app",
    "point": "3",
    "plan_hash": "h",
    "version": 0,
    "approvals_required": 1,
    "break_glass": False,
    "review_required": False,
    "force": False,
    "needs_manual": False,
    "outcome": "",
    "created_at": AT,
    "expires_at": AT,
    "slack": {},
    "lease_generation": 0,
    "notes": [],
}


def _insert(connection: sa.Connection, table: sa.Table, **values: Any) -> None:
    """Insert the values the table has at this revision."""
    connection.execute(table.insert().values({k: v for k, v in values.items() if k in table.c}))


def _populate(engine: sa.Engine) -> sa.MetaData:
    meta = sa.MetaData()
    meta.reflect(engine)
    t = meta.tables
    with engine.begin() as connection:
        _insert(
            connection,
            t["incidents"],
            id="INC-1",
            created_at=AT,
            environment="prod",
            target="app",
            severity="high",
            source="slack",
            opened_by="alice",
            summary="",
            answers={},
            reason="",
        )
        for run_id, (requester, state, memory) in MEMORIES.items():
            plan = [MARKER_STEP] if run_id == "r-drill" else []
            values = {**COMMON, "id": run_id, "requester": requester, "state": state}
            _insert(connection, t["runs"], **values, plan=plan, memory=memory)
        step = {"run_id": "r-rollback", "attempts": 1, "summary": "", "output": "", "data": {}}
        for position, state in enumerate(("pending", "succeeded", "failed", "not run")):
            _insert(connection, t["steps"], **step, position=position, name="x", state=state)
        if "outbox" in t:
            for state in ("pending", "sent", "failed", "superseded"):
                _insert(
                    connection,
                    t["outbox"],
                    run_id="r-rollback",
                    kind="run.changed",
                    detail={},
                    state=state,
                    attempts=0,
                    created_at=AT,
                    last_error="",
                )
        if "rechecks" in t:
            _insert(
                connection,
                t["rechecks"],
                run_id="r-rollback",
                incident_id="INC-1",
                position=1,
                source="app",
                step="x",
                spec={},
                due_at=AT,
                state="done",
                attempts=0,
                claim_generation=0,
                outcome="",
            )
        if "target_versions" in t:
            for version, state in (("app:1.2.4", "rolled away"), ("app:1.2.3", "healthy")):
                _insert(
                    connection,
                    t["target_versions"],
                    environment="prod",
                    target="app",
                    version=version,
                    state=state,
                    label=version,
                    at=AT,
                )
        if "break_glass_reviews" in t:
            _insert(
                connection,
                t["break_glass_reviews"],
                run_id="r-rollback",
                incident_id="INC-1",
                environment="prod",
                requester="alice",
                reviewer="bob",
                assigned_at=AT,
            )
    return meta


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        return json.loads(value)
    return value


def _rows(engine: sa.Engine, meta: sa.MetaData) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the test wrote, comparable across databases."""
    names = ("runs", "steps", "outbox", "rechecks", "target_versions", "break_glass_reviews")
    found: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for name in [n for n in names if n in meta.tables]:
            rows = connection.execute(sa.select(meta.tables[name])).mappings().all()
            found[name] = sorted(({k: _plain(v) for k, v in row.items()} for row in rows), key=repr)
    return found


@pytest.mark.parametrize("revision", EARLIER)
def test_upgrading_moves_each_runs_facts_into_typed_columns_and_downgrading_moves_them_back(
    empty_database_url: str, revision: str
) -> None:
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine, revision)
        meta = _populate(engine)
        before = _rows(engine, meta)
        upgrade(engine)
        store = Store(engine)

        rollback = store.runs.get("r-rollback")
        assert rollback is not None and rollback.kind == RunKind.ROLLBACK
        assert (rollback.from_version, rollback.to_version) == ("rev 4 (v1.2.4)", "rev 3 (v1.2.3)")
        assert (rollback.from_key, rollback.to_key) == ("app:1.2.4", "app:1.2.3")
        assert rollback.verdicts == (VERDICT,)
        assert rollback.plan_stale_at == datetime(2026, 12, 1, 10, tzinfo=UTC)
        assert rollback.retries == 2
        assert rollback.leave_maintenance_on and not rollback.notify_customers
        assert rollback.memory == {"pitr.scratch": "/var/tmp/x"}

        drill = store.runs.get("r-drill")
        assert drill is not None and drill.kind == RunKind.DRILL
        assert (drill.from_version, drill.to_version, drill.from_key) == ("rev 4", "rev 3", None)
        assert drill.verdicts == ()
        assert drill.memory == {"drill.marker": "rev 4 (v1.2.4)"}

        auto = store.runs.get("r-auto")
        assert auto is not None and auto.kind == RunKind.AUTOMATIC
        assert (auto.from_version, auto.verdicts, auto.plan_stale_at) == (None, None, None)
        assert (auto.retries, auto.leave_maintenance_on, auto.notify_customers) == (0, False, True)
        assert auto.memory == {"swap.db": "db_old"}

        full = store.runs.get("r-full")
        assert full is not None and full.kind == RunKind.ROLLBACK
        assert (full.from_version, full.to_version, full.to_key) == ("", "previous", None)
        assert full.memory == {}

        downgrade(engine, revision)
        assert _rows(engine, meta) == before
    finally:
        engine.dispose()


STATE_COLUMNS = {
    "runs": RunState,
    "steps": StepState,
    "rechecks": RecheckState,
    "target_versions": VersionState,
    "outbox": OutboxState,
}


def test_each_state_column_takes_its_enums_values_and_the_database_refuses_any_other(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine, EARLIER[-1])
        meta = _populate(engine)
        upgrade(engine)
        meta = sa.MetaData()
        meta.reflect(engine)
        for name, states in [*STATE_COLUMNS.items(), ("runs", RunKind)]:
            table = meta.tables[name]
            column = "kind" if states is RunKind else "state"
            for value in states:
                with engine.begin() as connection:
                    connection.execute(table.update().values({column: value.value}))
            with pytest.raises(IntegrityError), engine.begin() as connection:
                connection.execute(table.update().values({column: "bogus"}))
    finally:
        engine.dispose()


def test_the_models_and_the_migrated_schema_agree(empty_database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bot.persistence.models import Base

    engine = make_engine(empty_database_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        checks = sa.inspect(engine).get_check_constraints("runs")
        assert {c["name"] for c in checks} == {"ck_runs_state", "ck_runs_kind"}
    finally:
        engine.dispose()
