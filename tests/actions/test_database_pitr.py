"""Restore into a recovery database, verification there, swap with sessions; dump-only honesty."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from actions.base import PermanentError, PlanningError, StepContext
from actions.database import (
    RECOVERY_MARKER,
    DatabaseTarget,
    RestoreIntoRecovery,
    SwapDatabases,
    VerifyDatabase,
    iso,
)
from tests.fakes.pg import (
    connection,
    dump,
    execute,
    exists,
    params,
    pg,
    run_plan,
    run_step,
    scalar,
)

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def clock() -> datetime:
    """Return the fixed test time."""
    return NOW


def target(db: str, backups: Path, methods: list[str] | None = None) -> DatabaseTarget:
    """Build a backup-method target on the test server with a fixed clock."""
    return DatabaseTarget(
        params(db, backups=str(backups), methods=methods or ["backup"]), now=clock
    )


@pytest.fixture
def two_backups(voxflow_db: str, tmp_path: Path) -> tuple[Path, Path]:
    """Dump 3 users two hours ago, 4 users one hour ago; leave 5 users live."""
    first = dump(voxflow_db, tmp_path, NOW - timedelta(hours=2))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('d@example.com')")
    second = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('e@example.com')")
    return first, second


@pytest.fixture
def open_sessions(voxflow_db: str) -> Iterator[list[psycopg.Connection[Any]]]:
    """Hold two sessions on the live database: one idle, one in a transaction with a lock."""
    idle = pg(voxflow_db)
    busy = psycopg.connect(host="127.0.0.1", user="postgres", dbname=voxflow_db)
    busy.execute("SELECT * FROM users WHERE id = 1 FOR UPDATE")
    yield [idle, busy]
    idle.close()
    busy.close()


def test_with_only_dumps_no_point_in_time_is_offered(
    voxflow_db: str, tmp_path: Path, two_backups: tuple[Path, Path]
) -> None:
    tgt = target(voxflow_db, tmp_path, ["pitr"])

    assert tgt.points() == []
    with pytest.raises(PlanningError, match="no pitr rollback point"):
        tgt.plan(None)


def test_a_time_asked_with_only_dumps_is_named_a_dump_restore(
    voxflow_db: str, tmp_path: Path, two_backups: tuple[Path, Path]
) -> None:
    first, _ = two_backups
    tgt = target(voxflow_db, tmp_path, ["pitr"])
    asked = f"pitr:{iso(NOW - timedelta(minutes=90))}"

    plan = tgt.plan(asked)
    check = tgt.checks(asked)[0]

    restore, verify_recovery = plan.stage
    (swap,) = plan.rollback
    assert isinstance(restore, RestoreIntoRecovery) and restore.dump == first.resolve()
    assert plan.notes[0].startswith(
        f"Not a point-in-time recovery: restore the dump of {iso(NOW - timedelta(hours=2))}, "
        "30 min before the time you asked"
    )
    assert "not point in time" in check.name
    assert f"{voxflow_db}_recovery" in verify_recovery.describe()
    assert isinstance(swap, SwapDatabases)
    assert f"rename {voxflow_db} to {voxflow_db}_pre_rollback_" in swap.describe()
    with pytest.raises(PlanningError, match="no dump of"):
        tgt.plan(f"pitr:{iso(NOW - timedelta(days=1))}")


def test_swap_ends_open_sessions_and_keeps_the_previous_database_intact(
    voxflow_db: str,
    tmp_path: Path,
    two_backups: tuple[Path, Path],
    open_sessions: list[psycopg.Connection[Any]],
) -> None:
    plan = target(voxflow_db, tmp_path).plan(f"backup:{two_backups[0]}")

    results = run_plan(plan)

    swapped = results[2]
    aside = f"{voxflow_db}_pre_rollback_20260110_120000"
    assert swapped.data["aside"] == aside
    assert swapped.data["sessions_ended"] == 2
    assert "idle in transaction" in swapped.output
    assert "ended session: pid " in swapped.output
    assert swapped.data["connections_refused_seconds"] >= 0
    assert "Connections were refused for" in swapped.summary
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3
    assert scalar(aside, "SELECT count(*) FROM users") == 5
    assert scalar(aside, "SELECT count(*) FROM user_api_keys") == 1
    assert not exists(f"{voxflow_db}_recovery")
    for session in open_sessions:
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")


def test_swap_allows_connections_again_on_both_databases(
    voxflow_db: str, tmp_path: Path, two_backups: tuple[Path, Path]
) -> None:
    run_plan(target(voxflow_db, tmp_path).plan(None))

    with pg() as conn:
        rows = conn.execute(
            "SELECT datname, datallowconn FROM pg_database WHERE starts_with(datname, %s)",
            (voxflow_db,),
        ).fetchall()
    assert len(rows) == 2
    assert all(allowed for _, allowed in rows)


def test_swap_run_again_after_it_finished_changes_nothing(
    voxflow_db: str, tmp_path: Path, two_backups: tuple[Path, Path]
) -> None:
    plan = target(voxflow_db, tmp_path).plan(None)
    memory: dict[str, Any] = {}
    run_plan(plan, memory)

    again = run_step(plan.rollback[0], memory)

    assert again.summary.startswith(f"{voxflow_db} was already swapped")
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 4


def test_failed_verification_on_the_recovery_database_stops_before_the_swap(
    voxflow_db: str, tmp_path: Path
) -> None:
    execute(voxflow_db, "DELETE FROM user_api_keys")
    dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('live@example.com')")
    plan = target(voxflow_db, tmp_path).plan(None)
    memory: dict[str, Any] = {}
    run_step(plan.stage[0], memory)

    verify = plan.stage[1]
    assert isinstance(verify, VerifyDatabase)
    with pytest.raises(PermanentError, match="user_api_keys: total_api_keys is 0"):
        verify.run(StepContext.for_test(memory=memory))
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 4


def test_a_foreign_recovery_database_is_refused(
    voxflow_db: str, tmp_path: Path, two_backups: tuple[Path, Path]
) -> None:
    execute("postgres", f'CREATE DATABASE "{voxflow_db}_recovery"')

    with pytest.raises(PlanningError, match="not made by the bot"):
        target(voxflow_db, tmp_path).plan(None)


def test_a_leftover_recovery_database_of_the_bot_is_replaced(
    voxflow_db: str, tmp_path: Path, two_backups: tuple[Path, Path]
) -> None:
    leftover = f"{voxflow_db}_recovery"
    execute("postgres", f'CREATE DATABASE "{leftover}"')
    execute("postgres", f"COMMENT ON DATABASE \"{leftover}\" IS '{RECOVERY_MARKER}'")
    execute(leftover, "CREATE TABLE junk (id int)")
    restore = target(voxflow_db, tmp_path).plan(None).stage[0]

    run_step(restore, {})

    assert scalar(leftover, "SELECT count(*) FROM users") == 4
    assert scalar(leftover, "SELECT to_regclass('junk') IS NULL") is True


def test_swap_without_a_recovery_database_fails_and_leaves_the_live_one(
    voxflow_db: str,
) -> None:
    swap = SwapDatabases(connection(voxflow_db), f"{voxflow_db}_recovery", 5.0, clock)

    with pytest.raises(PermanentError, match="does not exist; nothing to swap in"):
        swap.run(StepContext.for_test())

    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3


@pytest.fixture
def recovery_copy(voxflow_db: str) -> str:
    """Make `<db>_recovery` as a copy of the live database with one user less."""
    recovery = f"{voxflow_db}_recovery"
    execute("postgres", f'CREATE DATABASE "{recovery}" TEMPLATE "{voxflow_db}"')
    execute(recovery, "DELETE FROM users WHERE id = 3")
    execute("postgres", f"COMMENT ON DATABASE \"{recovery}\" IS '{RECOVERY_MARKER}'")
    return recovery


@pytest.fixture
def rename_blocker(voxflow_db: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold a lock on the live database's catalog entry from the maintenance database."""
    blocker = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    blocker.execute(f"COMMENT ON DATABASE \"{voxflow_db}\" IS 'busy'".encode())
    yield blocker
    blocker.close()


def test_swap_retries_while_the_rename_is_blocked(
    voxflow_db: str, recovery_copy: str, rename_blocker: psycopg.Connection[Any]
) -> None:
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        rename_blocker.rollback()

    swap = SwapDatabases(
        connection(voxflow_db), recovery_copy, 20.0, clock, retry_delay=0.05, lock_wait=0.2
    )
    ctx = StepContext.for_test(timeout=20.0, emit=emit)

    result = swap.run(ctx)

    assert result.data["attempts"] == 2
    assert "lock timeout" in lines[0]
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 2


def test_swap_gives_up_at_the_deadline_and_reopens_the_live_database(
    voxflow_db: str, recovery_copy: str, rename_blocker: psycopg.Connection[Any]
) -> None:
    swap = SwapDatabases(connection(voxflow_db), recovery_copy, 1.0, clock, retry_delay=0.05)

    with pytest.raises(PermanentError, match=f"could not rename {voxflow_db} after"):
        swap.run(StepContext.for_test(timeout=1.0))
    rename_blocker.rollback()

    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3
    assert scalar(recovery_copy, "SELECT count(*) FROM users") == 2
