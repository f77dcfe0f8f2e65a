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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.base import PlanningError, StepContext, spec_of
from actions.database import DatabaseParams, DatabaseTarget, VerificationQuery
from actions.database.params import DatabaseConnection, PgBackRest, WalArchive
from actions.database.pitr import RestoreToTime, exact
from tests.fakes.pg import run_step
from tests.fakes.pgcluster import (
    ArchivedCluster,
    archived_cluster,
    pgbackrest_cluster,
    unique_name,
)

pytestmark = pytest.mark.postgres

__all__ = ["archived_cluster", "pgbackrest_cluster"]

QUERIES = [VerificationQuery(name="events", sql="SELECT count(*) AS n FROM events", nonzero=["n"])]


@dataclass
class History:
    """The scratch cluster, its database and the commit times of the three writes."""

    cluster: ArchivedCluster
    db: str
    writes: list[datetime]

    def params(self, **overrides: Any) -> DatabaseParams:
        """Return the target's params: the cluster as the live server, its archive for PITR."""
        overrides.setdefault("restore_timeout", 120.0)
        overrides.setdefault("swap_timeout", 20.0)
        return DatabaseParams(
            kind="database",
            connection=DatabaseConnection(host="127.0.0.1", port=self.cluster.port, dbname=self.db),
            methods=["pitr"],
            archive=WalArchive(
                base_backups=str(self.cluster.base), wal_archive=str(self.cluster.archive)
            ),
            verification=QUERIES,
            **overrides,
        )

    def ids(self, dbname: str) -> list[int]:
        """Return the event ids in a database of the cluster."""
        with self.cluster.connect(dbname) as conn:
            return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]


@pytest.fixture
def history(archived_cluster: ArchivedCluster) -> History:
    """Row 0, a base backup, then rows 1, 2, 3 committed about 1.2 s apart, all archived."""
    db = unique_name()
    archived_cluster.execute("postgres", f'CREATE DATABASE "{db}"')
    archived_cluster.execute(db, "CREATE TABLE events (id int PRIMARY KEY, note text)")
    archived_cluster.write(db, "INSERT INTO events VALUES (0, 'before the backup')")
    archived_cluster.switch_wal()
    archived_cluster.base_backup()
    time.sleep(1.2)
    writes = []
    for i in (1, 2, 3):
        writes.append(archived_cluster.write(db, f"INSERT INTO events VALUES ({i}, 'write {i}')"))
        time.sleep(1.2)
    archived_cluster.switch_wal()
    return History(archived_cluster, db, writes)


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
    time.sleep(1.2)
    writes = []
    for i in (1, 2, 3):
        writes.append(cluster.write(db, f"INSERT INTO events VALUES ({i}, 'write {i}')"))
        time.sleep(1.2)
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
