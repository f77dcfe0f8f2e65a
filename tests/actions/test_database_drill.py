"""Restore drills of a database on the real PostgreSQL: the newest dump and the end of the
WAL archive restored into scratch databases, verified there, dropped; live untouched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.base import PermanentError, PlanningError, StepContext, spec_of
from actions.database import (
    RECOVERY_MARKER,
    DatabaseParams,
    DatabaseTarget,
    DropScratch,
    VerificationQuery,
    drill_plan,
    scratch_names,
)
from actions.database.params import DatabaseConnection, RdsInstance, WalArchive
from tests.fakes.pg import connection, dump, execute, exists, params, pg, run_step, scalar
from tests.fakes.pgcluster import ArchivedCluster, archived_cluster, unique_name

pytestmark = pytest.mark.postgres
pytest_plugins = ["tests.fakes.pg"]
__all__ = ["archived_cluster"]

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
WORDS = "('B'), ('a'), ('af'), ('ä'), ('ae'), ('z')"
PHONEBOOK_ORDER = VerificationQuery(
    name="phonebook order",
    sql="SELECT count(*) AS names, string_agg(name, ',' ORDER BY name) = 'a,ae,ä,af,B,z'"
    " AS sorted_like_live FROM names",
    nonzero=["names", "sorted_like_live"],
)
"""German phone-book order (ICU de-u-co-phonebk: ä sorts as ae); C.UTF-8 gives B a ae af z ä."""
SHAPE = (
    "SELECT datlocprovider::text, daticulocale, datcollate, pg_encoding_to_char(encoding)"
    " FROM pg_database WHERE datname = %s"
)


def shape(db: str) -> tuple[Any, ...]:
    """A database's locale provider, ICU locale, LC_COLLATE and encoding."""
    with pg() as conn:
        row = conn.execute(SHAPE, (db,)).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def phonebook_db(tmp_path: Path) -> Iterator[str]:
    """A database with the ICU locale de-u-co-phonebk, dumped twice (the newer dump kept)."""
    db = f"rbt_{uuid.uuid4().hex[:12]}"
    execute(
        "postgres",
        f"CREATE DATABASE \"{db}\" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu"
        " ICU_LOCALE 'de-u-co-phonebk' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
    )
    try:
        execute(db, "CREATE TABLE names (name text PRIMARY KEY)")
        dump(db, tmp_path, NOW - timedelta(days=1))  # empty: would fail the queries
        execute(db, f"INSERT INTO names VALUES {WORDS}")
        dump(db, tmp_path, NOW - timedelta(hours=1))
        execute(db, "INSERT INTO names VALUES ('after the dump')")
        yield db
    finally:
        with pg() as conn:
            for name in (db, *scratch_names(db)):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def test_a_drill_restores_the_newest_dump_with_the_live_locale_verifies_it_and_drops_it(
    phonebook_db: str, tmp_path: Path
) -> None:
    tgt = DatabaseTarget(
        params(phonebook_db, backups=str(tmp_path), verification=[PHONEBOOK_ORDER])
    )
    drill = drill_plan(tgt)
    scratch, _ = scratch_names(phonebook_db)
    memory: dict[str, Any] = {}

    restored = run_step(drill.dump[0], memory)
    scratch_shape = shape(scratch)
    verified = run_step(drill.dump[1], memory)
    dropped = run_step(drill.cleanup[0], memory)

    assert drill.point == f"backup:{tmp_path.resolve()}/{phonebook_db}_20261207_090000.dump"
    assert drill.pitr == [] and len(drill.cleanup) == 1
    assert scratch_shape == shape(phonebook_db) == ("i", "de-u-co-phonebk", "C.UTF-8", "UTF8")
    assert restored.data["restore_bytes_per_second"] > 0 and restored.data["bytes"] > 0
    assert "sorted_like_live  True" in verified.output
    assert dropped.summary == f"Dropped the scratch database {scratch}"
    assert not exists(scratch)
    assert scalar(phonebook_db, "SELECT count(*) FROM names") == 7  # live as it was


def test_a_drill_plan_names_the_backup_and_says_nothing_live_is_written(
    voxflow_db: str, tmp_path: Path
) -> None:
    dump(voxflow_db, tmp_path, NOW)
    drill = drill_plan(DatabaseTarget(params(voxflow_db, backups=str(tmp_path))))

    described = [a.describe() for a in [*drill.dump, *drill.cleanup]]
    assert f"{voxflow_db} is not touched" in described[0]
    assert f"on {voxflow_db}_drill on 127.0.0.1:5432" in described[1]
    assert f"Drop database {voxflow_db}_drill" in described[2]
    assert drill.restored == f"backup {voxflow_db}_20261207_100000.dump"
    assert drill.notes[-1].startswith(f"Nothing is written to {voxflow_db}")


def test_planning_the_same_drill_again_keeps_the_dump_it_chose(
    voxflow_db: str, tmp_path: Path
) -> None:
    dump(voxflow_db, tmp_path, NOW - timedelta(hours=2))
    tgt = DatabaseTarget(params(voxflow_db, backups=str(tmp_path)))
    first = drill_plan(tgt)
    dump(voxflow_db, tmp_path, NOW)  # a newer dump arrives before the runner plans again

    again = drill_plan(tgt, first.point)

    assert [spec_of(a) for a in again.dump] == [spec_of(a) for a in first.dump]
    assert drill_plan(tgt).point != first.point
    (tmp_path / f"{voxflow_db}_20261207_080000.dump").unlink()
    with pytest.raises(PlanningError, match="the drill was planned with is gone"):
        drill_plan(tgt, first.point)


def test_a_database_with_nothing_to_restore_or_on_rds_is_refused_saying_why(
    tmp_path: Path,
) -> None:
    empty = DatabaseTarget(params("voxflow", backups=str(tmp_path)))
    with pytest.raises(PlanningError, match="voxflow has no backup to drill: no dump in"):
        drill_plan(empty)
    rds = DatabaseTarget(params("voxflow", methods=["pitr"], rds=RdsInstance(instance_id="db-1")))
    with pytest.raises(PlanningError, match="billable instance"):
        drill_plan(rds)


def test_the_drop_refuses_a_database_the_bot_did_not_make(make_db: Any) -> None:
    live = make_db()
    theirs = f"{live}_drill"
    execute("postgres", f'CREATE DATABASE "{theirs}"')
    drop = DropScratch(connection(live), theirs)

    with pytest.raises(PermanentError, match="was not made by the bot; it is not dropped"):
        drop.run(StepContext.for_test(timeout=20.0))

    assert exists(theirs)
    execute("postgres", f"COMMENT ON DATABASE \"{theirs}\" IS '{RECOVERY_MARKER}'")
    assert drop.run(StepContext.for_test(timeout=20.0)).summary.startswith("Dropped")
    again = drop.run(StepContext.for_test(timeout=20.0))
    assert again.skipped and not exists(theirs)


def test_a_resumed_drill_rebuilds_its_steps_and_refuses_other_databases(
    voxflow_db: str, tmp_path: Path
) -> None:
    dump(voxflow_db, tmp_path, NOW)
    tgt = DatabaseTarget(params(voxflow_db, backups=str(tmp_path)))
    drill = drill_plan(tgt)

    rebuilt = [tgt.restore(a.name, spec_of(a)) for a in [*drill.dump, *drill.cleanup]]

    assert [a.describe() for a in rebuilt] == [a.describe() for a in [*drill.dump, *drill.cleanup]]
    with pytest.raises(PlanningError, match="is not the recovery database"):
        tgt.restore("database.drop_scratch", {"scratch": voxflow_db})
    with pytest.raises(PlanningError, match="is not the recovery database"):
        tgt.restore("database.swap", {"recovery": f"{voxflow_db}_drill", "source": "x"})


def test_a_drill_recovers_the_archive_end_in_a_scratch_instance_and_drops_the_copy(
    archived_cluster: ArchivedCluster,
) -> None:
    db = unique_name()
    archived_cluster.execute("postgres", f'CREATE DATABASE "{db}"')
    archived_cluster.execute(db, "CREATE TABLE events (id int PRIMARY KEY)")
    archived_cluster.write(db, "INSERT INTO events VALUES (0)")
    archived_cluster.switch_wal()
    archived_cluster.base_backup()
    archived_cluster.next_second()
    archived_cluster.write(db, "INSERT INTO events VALUES (1)")
    archived_cluster.next_second()
    last = archived_cluster.write(db, "INSERT INTO events VALUES (2)")
    archived_cluster.switch_wal()
    count = VerificationQuery(name="events", sql="SELECT count(*) AS n FROM events", nonzero=["n"])
    tgt = DatabaseTarget(
        DatabaseParams(
            kind="database",
            connection=DatabaseConnection(host="127.0.0.1", port=archived_cluster.port, dbname=db),
            methods=["pitr"],
            archive=WalArchive(
                base_backups=str(archived_cluster.base),
                wal_archive=str(archived_cluster.archive),
            ),
            verification=[count],
            restore_timeout=120.0,
        )
    )
    drill = drill_plan(tgt)
    _, scratch = scratch_names(db)
    memory: dict[str, Any] = {}

    recovered = run_step(drill.pitr[0], memory, timeout=120.0)
    with archived_cluster.connect(scratch) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
    verified = run_step(drill.pitr[1], memory)
    dropped = run_step(drill.cleanup[0], memory)

    assert drill.dump == [] and drill.point.startswith("pitr:")
    assert datetime.fromisoformat(drill.point.removeprefix("pitr:")) == last - timedelta(
        microseconds=1
    )
    assert ids == [0, 1]  # the whole archive replayed, up to its last commit
    assert recovered.data["restore_bytes_per_second"] > 0
    assert "events" in verified.output
    assert dropped.summary == f"Dropped the scratch database {scratch}"
    with archived_cluster.connect() as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert scratch not in names and db in names
    assert not any(Path(p).exists() for k, p in memory.items() if "scratch" in k and p)
