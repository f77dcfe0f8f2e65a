"""Flat with history: every query the bot makes by state, target, time or message uses an index.

The statements are the ones `Store` really sends (captured from the engine),
explained on SQLite (`EXPLAIN QUERY PLAN`) and PostgreSQL (`EXPLAIN` with
sequential scans priced out, so the plan shows whether an index *can* serve
the query, whatever the table's size). A checklist tick on a run older than
1,000 others is applied end to end (issue 16, point 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bot.domain.states import ACTIVE_STATES
from bot.persistence.store import Store, make_engine, upgrade
from sandbox.harness import Sandbox
from sandbox.history import fill_history
from tests.fakes.config import ALICE, BOB, CAROL, CHANNEL
from tests.fakes.thread import card, request_rollback
from tests.fakes.waiting import wait_for


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    upgrade(engine)
    fill_history(engine, count=300, until=datetime.now(UTC))
    yield Store(engine)
    engine.dispose()


def _sent(engine: Engine, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The SELECT statements `call` sends, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen, "the call sent no SELECT"
    return seen


def _plan(engine: Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {statement}", parameters)
        plan = "\n".join(str(row[0]) for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
        return plan


QUERIES: dict[str, tuple[Callable[[Store], Any], str]] = {
    "status: active runs": (
        lambda s: s.runs.find(states=ACTIVE_STATES),
        "ix_runs_state_created_at",
    ),
    "history of a target": (
        lambda s: s.runs.find(environment="prod", target="app", limit=20),
        "ix_runs_environment_target_created_at",
    ),
    "newest runs": (lambda s: s.runs.find(limit=10), "ix_runs_created_at"),
    "expiry sweep": (lambda s: s.runs.due_for_expiry(), "ix_runs_state_created_at"),
    "claimable runs": (lambda s: s.leases.claimable(), "ix_runs_state_created_at"),
    "restore rate": (
        lambda s: s.steps.values("restore_bytes_per_second"),
        "ix_steps_state_finished_at",
    ),
    "checklist's run by its message": (
        lambda s: s.posts.run_of(channel="C0PAST0001", ts="1600000007.000300"),
        "ix_slack_messages_channel_ts",
    ),
}


@pytest.mark.parametrize("query", list(QUERIES))
def test_each_history_query_uses_its_index(store: Store, query: str) -> None:
    call, index = QUERIES[query]
    checked = 0
    for statement, parameters in _sent(store.engine, lambda: call(store)):
        if "FROM " not in statement.upper():
            continue  # the database's clock, read to compare times across replicas: no table
        plan = _plan(store.engine, statement, parameters)
        assert index in plan, f"{query}: {statement}\n{plan}"
        assert "SCAN runs\n" not in plan + "\n" and "Seq Scan" not in plan, plan
        checked += 1
    assert checked, f"{query}: no query of a table was sent"


def test_incident_id_allocation_looks_up_the_key_without_like(store: Store) -> None:
    at = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
    store.clock = lambda: at
    first = store.incidents.create(
        environment="prod", target="app", severity="high", opened_by=ALICE
    )
    sent = _sent(
        store.engine,
        lambda: store.incidents.create(
            environment="prod", target="app", severity="high", opened_by=BOB
        ),
    )
    ids = [s for s in sent if "incidents.id" in s[0] and "IN" in s[0].upper()]
    assert ids and all(" LIKE " not in s.upper() for s, _ in sent)
    plan = _plan(store.engine, *ids[0])
    assert "sqlite_autoindex_incidents_1" in plan or "incidents_pkey" in plan, plan
    assert first.id == "INC-20261128-030000"
    second = store.incidents.get("INC-20261128-030000-2")
    assert second is not None and second.opened_by == BOB


def test_a_checklist_tick_on_a_run_older_than_1000_others_is_applied(
    sandbox: Sandbox,
) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    checklist = wait_for(
        lambda: next(
            (
                m
                for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)
                if m.text == "Post-rollback verification checklist"
            ),
            None,
        ),
        what="the checklist",
    )
    store = sandbox.process.store
    ours = store.runs.find(limit=1)[0]
    # 1,000 newer runs, all finished: ours is now the 1,001st newest.
    fill_history(store.engine, count=1000, until=datetime.now(UTC) + timedelta(days=30))
    assert ours.id not in [r.id for r in store.runs.find(limit=1000)]
    sandbox.person(CAROL).tick(CHANNEL, checklist.ts, "verify_tick", ["auth"])
    ticks = wait_for(
        lambda: [e for e in store.events.of(ours.incident_id) if e.kind == "checklist.tick"],
        what="the tick to be recorded",
    )
    assert [(e.actor, e.detail["item"], e.detail["checked"]) for e in ticks] == [
        (CAROL, "auth", True)
    ]
