"""A scratch cluster with a database whose rows were committed at known, archived times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from actions.database import (
    DatabaseParams,
    VerificationQuery,
)
from actions.database.params import DatabaseConnection, WalArchive
from tests.fakes.pgcluster import (
    ArchivedCluster,
    unique_name,
)

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
    archived_cluster.next_second()
    writes = []
    for i in (1, 2, 3):
        writes.append(archived_cluster.write(db, f"INSERT INTO events VALUES ({i}, 'write {i}')"))
        archived_cluster.next_second()
    archived_cluster.switch_wal()
    return History(archived_cluster, db, writes)
