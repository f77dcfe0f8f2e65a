"""Restore drills of a database on the real PostgreSQL: the newest dump and the end of the
WAL archive restored into scratch databases, verified there, dropped; live untouched."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
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
from actions.database.names import parse_time
from actions.database.params import DatabaseConnection, PgBackRest, RdsInstance, WalArchive
from tests.fakes.pg import connection, dump, execute, exists, params, pg, run_step, scalar
from tests.fakes.pgcluster import (
    ArchivedCluster,
    archived_cluster,
    pgbackrest_cluster,
    unique_name,
)

pytestmark = pytest.mark.postgres
pytest_plugins = ["tests.fakes.pg"]
__all__ = ["archived_cluster", "pgbackrest_cluster"]

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


def written(cluster: ArchivedCluster, *, backup: Callable[[], object]) -> tuple[str, datetime]:
    """A database with row 0, `backup`, then rows 1 and 2 in later seconds, all archived;
    its name and the last commit's time."""
    db = unique_name()
    cluster.execute("postgres", f'CREATE DATABASE "{db}"')
    cluster.execute(db, "CREATE TABLE events (id int PRIMARY KEY)")
    cluster.write(db, "INSERT INTO events VALUES (0)")
    backup()
    cluster.next_second()
    cluster.write(db, "INSERT INTO events VALUES (1)")
    cluster.next_second()
    last = cluster.write(db, "INSERT INTO events VALUES (2)")
    cluster.switch_wal()
    return db, last


def drill_the_archive(
    cluster: ArchivedCluster, db: str, **source: Any
) -> tuple[Any, list[int], list[str]]:
    """Plan a point-in-time-only drill, run it; (plan, ids in the copy, step summaries)."""
    count = VerificationQuery(name="events", sql="SELECT count(*) AS n FROM events", nonzero=["n"])
    tgt = DatabaseTarget(
        DatabaseParams(
            kind="database",
            connection=DatabaseConnection(host="127.0.0.1", port=cluster.port, dbname=db),
            methods=["pitr"],
            verification=[count],
            restore_timeout=120.0,
            **source,
        )
    )
    drill = drill_plan(tgt)
    _, scratch = scratch_names(db)
    memory: dict[str, Any] = {}
    recovered = run_step(drill.pitr[0], memory, timeout=120.0)
    with cluster.connect(scratch) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
    verified = run_step(drill.pitr[1], memory)
    dropped = run_step(drill.cleanup[0], memory)
    with cluster.connect() as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert scratch not in names and db in names
    assert recovered.data["restore_bytes_per_second"] > 0 and "events" in verified.output
    assert not any(Path(p).exists() for k, p in memory.items() if "scratch" in k and p)
    return drill, ids, [recovered.summary, dropped.summary]


def test_a_drill_recovers_the_wal_archive_in_a_scratch_instance_and_drops_the_copy(
    archived_cluster: ArchivedCluster,
) -> None:
    def backup() -> None:
        archived_cluster.switch_wal()
        archived_cluster.base_backup()

    db, last = written(archived_cluster, backup=backup)

    drill, ids, said = drill_the_archive(
        archived_cluster,
        db,
        archive=WalArchive(
            base_backups=str(archived_cluster.base), wal_archive=str(archived_cluster.archive)
        ),
    )

    assert drill.dump == [] and drill.point.startswith("pitr:")
    assert parse_time(drill.point.removeprefix("pitr:")) == last - timedelta(microseconds=1)
    assert ids == [0, 1]  # the whole archive replayed, up to its last commit
    assert said[1] == f"Dropped the scratch database {db}_drill_pitr"


def test_a_drill_recovers_from_pgbackrest_in_a_scratch_instance_and_drops_the_copy(
    pgbackrest_cluster: ArchivedCluster,
) -> None:
    db, last = written(pgbackrest_cluster, backup=pgbackrest_cluster.pgbackrest_backup)
    stanza = PgBackRest(
        stanza=pgbackrest_cluster.stanza, config=str(pgbackrest_cluster.pgbackrest_config)
    )

    drill, ids, said = drill_the_archive(pgbackrest_cluster, db, pgbackrest=stanza)

    assert parse_time(drill.point.removeprefix("pitr:")) == last - timedelta(microseconds=1)
    assert ids == [0, 1]
    assert said[0].startswith(f"Recovered {db} to ")
