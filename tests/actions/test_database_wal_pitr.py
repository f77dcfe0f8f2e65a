"""Real point-in-time recovery from PostgreSQL's continuous archiving, on a scratch cluster.

The cluster archives its WAL (archive_command cp) and has a pg_basebackup base backup; rows
are written at known commit times (track_commit_timestamp) with pg_switch_wal after them.
The bot recovers to a time between two writes in a scratch instance of its own and must
return exactly the rows committed by then.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.base import Level, PermanentError, PlanningError, StepContext, spec_of
from actions.database import (
    RECOVERY_MARKER,
    DatabaseTarget,
    SwapDatabases,
)
from actions.database.names import exact, pitr_ref
from actions.database.params import PgBackRest
from actions.database.pitr import RestoreToTime
from tests.fakes.pg import run_step
from tests.fakes.pgcluster import (
    ArchivedCluster,
    give_to_postgres,
    unique_name,
)
from tests.fakes.pitr_history import History

pytestmark = pytest.mark.postgres

pytest_plugins = ["tests.fakes.pgcluster", "tests.fakes.pitr_history"]


def between(a: datetime, b: datetime) -> datetime:
    """Return the moment halfway between two times."""
    return a + (b - a) / 2


def test_points_offer_the_real_window_from_the_base_backup_to_the_last_commit(
    history: History,
) -> None:
    tgt = DatabaseTarget(history.params())

    earliest, latest = tgt.pitr_window() or (None, None)
    points = tgt.points()

    assert earliest is not None and latest is not None
    assert earliest < history.writes[0]
    assert latest >= history.writes[2]
    assert latest - history.writes[2] < timedelta(seconds=5)
    assert len(points) == 1
    assert points[0].label.startswith(f"point in time (WAL archive {history.cluster.archive})")


def test_recovery_to_a_second_between_two_writes_returns_exactly_the_rows_of_that_second(
    history: History,
) -> None:
    moment = between(history.writes[0], history.writes[1])
    tgt = DatabaseTarget(history.params())
    plan = tgt.plan(f"pitr:{moment.isoformat()}")
    memory: dict[str, Any] = {}

    results = [
        run_step(step, memory, timeout=120) for step in [*plan.stage, *plan.rollback, *plan.verify]
    ]

    restored, _, swapped, _ = results
    assert history.ids(history.db) == [0, 1]
    assert history.ids(swapped.data["aside"]) == [0, 1, 2, 3]
    assert "recovery stopping before commit" in restored.data["stopped"]
    assert exact(moment) in plan.stage[0].describe()
    assert plan.notes[1] == (
        f"Changes committed after {exact(moment)} are not in the restored database; the "
        f"current {history.db} is kept as {history.db}_pre_rollback_<time of the swap>"
    )
    assert memory[f"database.pitr_scratch:{history.db}_recovery"] is None


@pytest.mark.parametrize(("inclusive", "expected"), [(True, [0, 1, 2]), (False, [0, 1])])
def test_a_target_on_a_commit_time_keeps_it_only_when_inclusive(
    history: History, inclusive: bool, expected: list[int]
) -> None:
    tgt = DatabaseTarget(history.params(recovery_target_inclusive=inclusive))
    restore = tgt.plan(f"pitr:{history.writes[1].isoformat()}").stage[0]
    assert isinstance(restore, RestoreToTime)

    run_step(restore, {}, timeout=120)

    assert history.ids(f"{history.db}_recovery") == expected
    assert history.ids(history.db) == [0, 1, 2, 3]
    assert ("off" if not inclusive else "on") in restore.describe()


def test_times_outside_the_window_are_refused_and_steps_rebuild_from_their_specs(
    history: History,
) -> None:
    tgt = DatabaseTarget(history.params())
    plan = tgt.plan(f"pitr:{between(history.writes[0], history.writes[1]).isoformat()}")
    for step in [*plan.stage, *plan.rollback, *plan.verify]:
        again = tgt.restore(step.name, json.loads(json.dumps(spec_of(step))))
        assert (again.name, again.describe()) == (step.name, step.describe())

    for moment in (
        history.writes[2] + timedelta(minutes=5),
        history.writes[0] - timedelta(hours=1),
    ):
        with pytest.raises(PlanningError, match="outside the restorable window"):
            tgt.plan(f"pitr:{moment.isoformat()}")


@pytest.fixture
def scratch_parent() -> Iterator[Path]:
    """A directory the postgres OS user can reach, for the bot's scratch instances."""
    path = Path(tempfile.mkdtemp(prefix="rbt_scratch_"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_scratch_instance_is_stopped_and_removed_even_when_the_copy_fails(
    history: History, monkeypatch: pytest.MonkeyPatch, scratch_parent: Path
) -> None:
    params = history.params()
    params = params.model_copy(
        update={"archive": params.archive.model_copy(update={"directory": str(scratch_parent)})}  # type: ignore[union-attr]
    )
    restore = (
        DatabaseTarget(params)
        .plan(f"pitr:{between(history.writes[0], history.writes[1]).isoformat()}")
        .stage[0]
    )
    memory: dict[str, Any] = {}

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("copy interrupted")

    monkeypatch.setattr("actions.database.pitr.pg_restore", broken)
    with pytest.raises(RuntimeError, match="copy interrupted"):
        restore.run(StepContext.for_test(timeout=120, memory=memory))
    assert list(scratch_parent.iterdir()) == []
    monkeypatch.undo()

    again = run_step(restore, memory, timeout=120)
    twice = run_step(restore, memory, timeout=120)

    assert history.ids(f"{history.db}_recovery") == [0, 1]
    assert not again.skipped
    assert twice.skipped and "already restored" in twice.summary
    assert list(scratch_parent.iterdir()) == []


@pytest.fixture
def backrest_history(pgbackrest_cluster: ArchivedCluster) -> History:
    """Row 0, a full pgBackRest backup, then rows 1, 2, 3 about 1.2 s apart, all archived."""
    cluster = pgbackrest_cluster
    db = unique_name()
    cluster.execute("postgres", f'CREATE DATABASE "{db}"')
    cluster.execute(db, "CREATE TABLE events (id int PRIMARY KEY, note text)")
    cluster.write(db, "INSERT INTO events VALUES (0, 'before the backup')")
    cluster.pgbackrest_backup()
    cluster.next_second()
    writes = []
    for i in (1, 2, 3):
        writes.append(cluster.write(db, f"INSERT INTO events VALUES ({i}, 'write {i}')"))
        cluster.next_second()
    cluster.switch_wal()
    return History(cluster, db, writes)


def test_pgbackrest_recovery_to_a_second_between_two_writes_returns_its_rows(
    backrest_history: History,
) -> None:
    history = backrest_history
    params = history.params().model_copy(
        update={
            "archive": None,
            "pgbackrest": PgBackRest(
                stanza=history.cluster.stanza, config=str(history.cluster.pgbackrest_config)
            ),
        }
    )
    tgt = DatabaseTarget(params)
    earliest, latest = tgt.pitr_window() or (None, None)
    moment = between(history.writes[0], history.writes[1])

    plan = tgt.plan(f"pitr:{moment.isoformat()}")
    memory: dict[str, Any] = {}
    results = [
        run_step(step, memory, timeout=120) for step in [*plan.stage, *plan.rollback, *plan.verify]
    ]

    assert earliest is not None and latest is not None
    assert earliest < history.writes[0] <= history.writes[2] <= latest
    assert "pgbackrest --stanza=rbt restore --type=time" in plan.stage[0].describe()
    assert history.ids(history.db) == [0, 1]
    assert history.ids(results[2].data["aside"]) == [0, 1, 2, 3]


@pytest.fixture
def migrated(archived_cluster: ArchivedCluster) -> History:
    """Migration 001 and row 0, a base backup, row 1, migration 002 (a column and its
    schema_migrations row in one transaction), row 2 using the new column; all archived.
    `writes` holds the commit times of row 1, migration 002 and row 2."""
    cluster, db = archived_cluster, unique_name()
    cluster.execute("postgres", f'CREATE DATABASE "{db}"')
    cluster.execute(
        db,
        "CREATE TABLE schema_migrations (version text PRIMARY KEY);"
        "INSERT INTO schema_migrations VALUES ('001');"
        "CREATE TABLE events (id int PRIMARY KEY, note text);"
        "INSERT INTO events VALUES (0, 'before the backup')",
    )
    cluster.switch_wal()
    cluster.base_backup()
    writes = [cluster.write(db, "INSERT INTO events VALUES (1, 'healthy')")]
    cluster.next_second()
    writes.append(
        cluster.write(
            db,
            "ALTER TABLE events ADD COLUMN channel text NOT NULL DEFAULT 'web';"
            "INSERT INTO schema_migrations VALUES ('002')",
        )
    )
    cluster.next_second()
    writes.append(cluster.write(db, "INSERT INTO events VALUES (2, 'after', 'voice')"))
    cluster.switch_wal()
    return History(cluster, db, writes)


def test_the_default_point_is_just_before_the_newest_migration_and_says_so(
    migrated: History,
) -> None:
    applied = migrated.writes[1]
    tgt = DatabaseTarget(migrated.params())

    points = tgt.points()
    default = tgt.default_ref()
    plan = tgt.plan(None)
    memory: dict[str, Any] = {}
    for step in [*plan.stage, *plan.rollback, *plan.verify]:
        run_step(step, memory, timeout=120)

    source = f"point in time (WAL archive {migrated.cluster.archive})"
    assert points[0].label.startswith(
        f"just before migration 002 was applied at {applied:%Y-%m-%d %H:%M:%S} UTC · {source}"
    )
    assert points[0].ref == default == pitr_ref(applied - timedelta(microseconds=1))
    assert not points[0].avoid
    assert points[1].label.startswith(source)
    assert points[1].avoid.startswith("the last archived commit: recovering there undoes nothing")
    assert migrated.ids(migrated.db) == [0, 1]
    with migrated.cluster.connect(migrated.db) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        columns = [r[0] for r in conn.execute("SELECT * FROM events LIMIT 0").description or []]
    assert versions == ["001"]
    assert columns == ["id", "note"]


def test_without_a_known_change_there_is_no_default_until_a_healthy_time_is_given(
    history: History,
) -> None:
    tgt = DatabaseTarget(history.params())
    healthy = history.writes[1]

    [point] = tgt.points()
    with pytest.raises(PlanningError, match="no default point in time") as refused:
        tgt.default_ref()
    told = DatabaseTarget(history.params(), healthy_at=healthy)

    assert "no migration table" in point.avoid
    assert "choose the time just before the change" in str(refused.value)
    assert told.default_ref() == pitr_ref(healthy)
    assert told.points()[0].label.startswith(
        f"last known healthy at {healthy:%Y-%m-%d %H:%M:%S} UTC · point in time"
    )


def files(root: Path) -> dict[str, bytes]:
    """Read every file under a directory, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def in_tablespace(archived_cluster: ArchivedCluster) -> History:
    """A database in a tablespace of its own: row 0, a base backup (the tablespace mapped into
    the backup's own directory), rows 1, 2, 3 about 1.2 s apart; all archived."""
    cluster, db = archived_cluster, unique_name()
    location = cluster.root / "tablespace"
    location.mkdir()
    give_to_postgres(location)
    cluster.execute("postgres", f"CREATE TABLESPACE rbt_space LOCATION '{location}'")
    cluster.execute("postgres", f'CREATE DATABASE "{db}" TABLESPACE rbt_space')
    cluster.execute(db, "CREATE TABLE events (id int PRIMARY KEY, note text)")
    cluster.write(db, "INSERT INTO events VALUES (0, 'before the backup')")
    cluster.switch_wal()
    cluster.base_backup()
    cluster.next_second()
    writes = []
    for i in (1, 2, 3):
        writes.append(cluster.write(db, f"INSERT INTO events VALUES ({i}, 'write {i}')"))
        cluster.next_second()
    cluster.switch_wal()
    return History(cluster, db, writes)


def test_recovery_of_a_database_in_its_own_tablespace_leaves_the_backups_copy_untouched(
    in_tablespace: History,
) -> None:
    history = in_tablespace
    backup_space = history.cluster.base / "1_rbt_space"
    before = files(backup_space)
    moment = between(history.writes[0], history.writes[1])
    plan = DatabaseTarget(history.params()).plan(f"pitr:{moment.isoformat()}")
    memory: dict[str, Any] = {}

    lines: list[str] = []
    restored = plan.stage[0].run(
        StepContext.for_test(timeout=120, memory=memory, emit=lines.append)
    )

    assert before and files(backup_space) == before
    assert any(line.startswith("tablespace ") for line in lines)
    assert history.ids(f"{history.db}_recovery") == [0, 1]
    assert history.ids(history.db) == [0, 1, 2, 3]
    assert "recovery stopping before commit" in restored.data["stopped"]
    with history.cluster.connect() as conn:
        space = conn.execute(
            "SELECT t.spcname FROM pg_database d JOIN pg_tablespace t"
            " ON t.oid = d.dattablespace WHERE d.datname = %s",
            (f"{history.db}_recovery",),
        ).fetchone()
    assert space == ("rbt_space",)


def test_pgbackrest_recovery_of_a_database_in_its_own_tablespace_restores_it_aside(
    pgbackrest_cluster: ArchivedCluster,
) -> None:
    cluster, db = pgbackrest_cluster, unique_name()
    location = cluster.root / "tablespace"
    location.mkdir()
    give_to_postgres(location)
    cluster.execute("postgres", f"CREATE TABLESPACE rbt_space LOCATION '{location}'")
    cluster.execute("postgres", f'CREATE DATABASE "{db}" TABLESPACE rbt_space')
    cluster.execute(db, "CREATE TABLE events (id int PRIMARY KEY, note text)")
    cluster.write(db, "INSERT INTO events VALUES (0, 'before the backup')")
    cluster.pgbackrest_backup()
    cluster.next_second()
    first = cluster.write(db, "INSERT INTO events VALUES (1, 'write 1')")
    cluster.next_second()
    second = cluster.write(db, "INSERT INTO events VALUES (2, 'write 2')")
    cluster.switch_wal()
    history = History(cluster, db, [first, second])
    params = history.params().model_copy(
        update={
            "archive": None,
            "pgbackrest": PgBackRest(stanza=cluster.stanza, config=str(cluster.pgbackrest_config)),
        }
    )
    restore = DatabaseTarget(params).plan(f"pitr:{between(first, second).isoformat()}").stage[0]

    run_step(restore, {}, timeout=120)

    assert "--tablespace-map-all=<scratch>/tablespaces" in restore.describe()
    assert history.ids(f"{db}_recovery") == [0, 1]
    assert history.ids(db) == [0, 1, 2]


def test_a_prepared_transaction_blocks_before_approval_and_the_swap_renames_nothing(
    history: History,
) -> None:
    with history.cluster.connect(history.db) as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO events VALUES (9, 'prepared, never committed')")
        conn.execute("PREPARE TRANSACTION 'rbt_gid'")
    recovery = f"{history.db}_recovery"
    history.cluster.execute("postgres", f'CREATE DATABASE "{recovery}" TEMPLATE template0')
    history.cluster.execute(
        "postgres", f"COMMENT ON DATABASE \"{recovery}\" IS '{RECOVERY_MARKER}'"
    )
    tgt = DatabaseTarget(history.params())
    ref = f"pitr:{between(history.writes[0], history.writes[1]).isoformat()}"
    swap = SwapDatabases(history.params().connection, recovery, 20.0)

    [check] = [c for c in tgt.checks(ref) if c.name == "no prepared transaction holds the database"]
    findings = tgt.evidence(ref)
    with pytest.raises(PermanentError, match="Nothing was renamed") as refused:
        swap.run(StepContext.for_test(timeout=20.0))

    assert not check.ok and f"'rbt_gid' on {history.db} by postgres" in check.detail
    assert any(f.level == Level.BLOCKED and "rbt_gid" in f.text for f in findings)
    assert "'rbt_gid'" in str(refused.value)
    with history.cluster.connect() as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn")}
    history.cluster.execute(history.db, "ROLLBACK PREPARED 'rbt_gid'")
    assert {history.db, recovery} <= names


def test_flyway_the_default_is_just_before_the_newest_version_still_applied(
    archived_cluster: ArchivedCluster,
) -> None:
    cluster, db = archived_cluster, unique_name()
    cluster.execute("postgres", f'CREATE DATABASE "{db}"')
    cluster.execute(
        db,
        "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version text,"
        " description text, type text, script text, checksum int, installed_by text,"
        " installed_on timestamp NOT NULL DEFAULT now(), execution_time int, success boolean)",
    )
    row = (
        "INSERT INTO flyway_schema_history VALUES ({}, '{}', 'x', '{}', 'x', 0, 'f', now(), 1,"
        " true)"
    )
    cluster.execute(db, row.format(1, "1", "SQL"))
    cluster.switch_wal()
    cluster.base_backup()
    cluster.next_second()  # a backup's stop time is in whole seconds
    applied = cluster.write(db, row.format(2, "2", "SQL"))
    cluster.write(db, row.format(3, "3", "SQL"))
    cluster.write(db, row.format(4, "3", "UNDO_SQL"))
    cluster.switch_wal()
    tgt = DatabaseTarget(History(cluster, db, []).params())

    points = tgt.points()

    assert points[0].ref == pitr_ref(applied - timedelta(microseconds=1))
    assert points[0].label.startswith(
        f"just before migration 2 was applied at {applied:%Y-%m-%d %H:%M:%S} UTC · "
    )
