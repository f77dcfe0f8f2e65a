"""The database target's verdict evidence on the real PostgreSQL: freshness, data loss, SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actions.base import Level
from actions.database import DatabaseTarget
from actions.database.names import exact, iso
from actions.database.schema_compat import classify, write_estimate
from tests.fakes.pg import connection, dump, execute, params, scalar
from tests.fakes.pitr_history import History
from tests.fakes.waiting import wait_for

pytest_plugins = ["tests.fakes.pg", "tests.fakes.pgcluster", "tests.fakes.pitr_history"]


def target(db: str, backups: Path, now: datetime, **kwargs: object) -> DatabaseTarget:
    return DatabaseTarget(params(db, backups=str(backups), **kwargs), now=lambda: now)


@pytest.mark.postgres
def test_a_backup_older_than_the_objective_is_risky(voxflow_db: str, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    path = dump(voxflow_db, tmp_path, now - timedelta(hours=3))
    findings = target(voxflow_db, tmp_path, now, rpo="1h").evidence(f"backup:{path}")
    risky = [f for f in findings if f.level == Level.RISKY]
    assert [f.text for f in risky] == [
        f"stale: newest usable backup is from {iso(now - timedelta(hours=3))}, 3.0 h old, "
        "older than the recovery-point objective of 60 min"
    ]
    assert not [f for f in findings if f.level == Level.BLOCKED]


@pytest.mark.postgres
def test_a_backup_within_the_objective_is_fresh(voxflow_db: str, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    path = dump(voxflow_db, tmp_path, now - timedelta(minutes=10))
    findings = target(voxflow_db, tmp_path, now, rpo="1h").evidence(f"backup:{path}")
    assert [f.level for f in findings if f.text.startswith("fresh: ")] == [Level.OK]
    assert {f.level for f in findings} == {Level.OK, Level.LOSS}


@pytest.mark.postgres
def test_an_unreadable_newest_backup_does_not_count_as_fresh(
    voxflow_db: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    good = dump(voxflow_db, tmp_path, now - timedelta(hours=5))
    (
        tmp_path / f"{voxflow_db}_{(now - timedelta(minutes=5)).strftime('%Y%m%d_%H%M%S')}.dump"
    ).write_bytes(b"not a dump")
    findings = target(voxflow_db, tmp_path, now, rpo="2h").evidence(f"backup:{good}")
    assert any(f.level == Level.RISKY and f.text.startswith("stale: ") for f in findings)


@pytest.mark.postgres
def test_a_backup_restore_names_the_loss_window_with_an_estimate(
    voxflow_db: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    taken = now - timedelta(hours=2)
    path = dump(voxflow_db, tmp_path, taken)
    loss = [
        f
        for f in target(voxflow_db, tmp_path, now).evidence(f"backup:{path}")
        if f.level == Level.LOSS
    ]
    assert len(loss) == 1
    assert loss[0].text.startswith(
        f"writes committed after {iso(taken)} until the rollback are lost: "
    )
    assert "row changes" in loss[0].text
    assert loss[0].basis == f"writes after {iso(taken)} lost"


@pytest.mark.postgres
def test_the_row_estimate_comes_from_postgres_counters(voxflow_db: str) -> None:
    execute(voxflow_db, "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 500) g")
    counted = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'users'"
    wait_for(lambda: (scalar(voxflow_db, counted) or 0) >= 503, what="statistics flushed")
    now = datetime.now(UTC)
    everything = write_estimate(connection(voxflow_db), now - timedelta(days=3650), now=now)
    assert everything is not None and everything.at_least
    assert everything.rows >= 503 + 8  # ours and the fixture's, at least (8 outside users)
    assert everything.busiest[0][0] == "public.users"
    recent = write_estimate(connection(voxflow_db), now - timedelta(seconds=1), now=now)
    assert recent is not None and not recent.at_least and recent.rows <= everything.rows


def test_additive_sql_is_told_from_breaking_sql() -> None:
    additive = classify(
        "-- a new table, an index, a nullable column, a column with a default\n"
        "CREATE TABLE call_logs (id serial PRIMARY KEY, type text NOT NULL);\n"
        "CREATE INDEX CONCURRENTLY call_logs_type ON call_logs (type);\n"
        "ALTER TABLE agents ADD COLUMN voice text;\n"
        "ALTER TABLE agents ADD COLUMN tier text NOT NULL DEFAULT 'free';\n"
        "ALTER TABLE agents ALTER COLUMN name DROP NOT NULL;\n"
        "UPDATE agents SET voice = 'drop table x; rename';\n"
    )
    assert additive.additive, additive.breaking
    breaking = classify(
        "ALTER TABLE agents DROP COLUMN name;\n"
        "ALTER TABLE users RENAME COLUMN email TO mail;\n"
        "ALTER TABLE campaigns ADD COLUMN owner int NOT NULL;\n"
        "ALTER TABLE campaigns ALTER COLUMN status TYPE int USING 0;\n"
        "ALTER TABLE users ALTER COLUMN created_at SET NOT NULL;\n"
        "DROP TABLE user_api_keys;\n"
        "CALL do_something();\n"
    )
    assert [b.split(":")[0] for b in breaking.breaking] == [
        "drops a column",
        "renames",
        "adds a NOT NULL column without a default",
        "changes a type",
        "adds NOT NULL",
        "drops",
        "unclassified",
    ]


@pytest.mark.postgres
def test_a_point_in_time_names_the_exact_loss_and_the_archives_freshness(
    history: History,
) -> None:
    moment = history.writes[1] + (history.writes[2] - history.writes[1]) / 2
    ref = f"pitr:{moment.isoformat()}"
    now = datetime.now(UTC)
    findings = DatabaseTarget(history.params(rpo="1h"), now=lambda: now).evidence(ref)
    loss = [f for f in findings if f.level == Level.LOSS]
    assert loss[0].text.startswith(
        f"writes committed after {exact(moment)} until the rollback are lost: "
    )
    assert any(f.level == Level.OK and f.text.startswith("fresh: ") for f in findings)
    later = now + timedelta(hours=2)
    stale = DatabaseTarget(history.params(rpo="1h"), now=lambda: later).evidence(ref)
    window = DatabaseTarget(history.params()).pitr_window()
    assert window is not None
    assert [f.text.split(",")[0] for f in stale if f.level == Level.RISKY] == [
        f"stale: newest usable point in time (WAL archive {history.cluster.archive}) is from "
        f"{iso(window[1])}"
    ]


@pytest.mark.postgres
def test_a_logical_slot_and_unlogged_tables_are_said_before_a_point_in_time_recovery(
    history: History,
) -> None:
    history.cluster.execute(
        history.db, "CREATE UNLOGGED TABLE sessions (id int); INSERT INTO sessions VALUES (1)"
    )
    history.cluster.execute(
        history.db, "SELECT pg_create_logical_replication_slot('rbt_cdc', 'test_decoding')"
    )
    moment = history.writes[1] + (history.writes[2] - history.writes[1]) / 2

    findings = DatabaseTarget(history.params()).evidence(f"pitr:{moment.isoformat()}")

    assert [f.text for f in findings if f.level == Level.RISKY] == [
        f"logical replication slot rbt_cdc (test_decoding, inactive) belongs to {history.db} "
        f"by oid: after the swap it reads {history.db}_pre_rollback_<time>, so its subscribers "
        "and change-data-capture keep receiving the old database's changes until the slot is "
        "made again on the restored one"
    ]
    assert (
        "unlogged table(s) public.sessions: not written to WAL, so point-in-time recovery "
        "brings them back empty"
    ) in [f.text for f in findings if f.level == Level.LOSS]


@pytest.fixture
def subscribed_db(voxflow_db: str) -> Iterator[str]:
    """The VoxFlow database with a (not connected) subscription; dropped before the database."""
    execute(
        voxflow_db,
        "CREATE SUBSCRIPTION rbt_feed CONNECTION 'host=127.0.0.1 dbname=nowhere'"
        " PUBLICATION feed WITH (connect = false)",
    )
    yield voxflow_db
    execute(voxflow_db, "ALTER SUBSCRIPTION rbt_feed SET (slot_name = NONE)")
    execute(voxflow_db, "DROP SUBSCRIPTION rbt_feed")


@pytest.mark.postgres
def test_a_subscription_of_the_live_database_is_said_to_stay_with_the_old_one(
    subscribed_db: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    path = dump(subscribed_db, tmp_path, now - timedelta(minutes=10))

    findings = target(subscribed_db, tmp_path, now).evidence(f"backup:{path}")

    assert [f.text for f in findings if f.level == Level.RISKY] == [
        f"subscription rbt_feed (disabled) stays with {subscribed_db}_pre_rollback_<time>, "
        "which keeps applying the publisher's changes; the restored database's copy is "
        "created disabled and must be enabled (and its slot seen to) by a person"
    ]
