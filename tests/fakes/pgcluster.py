"""Scratch PostgreSQL clusters with WAL archiving, for point-in-time recovery tests.

A cluster is made with initdb and run with pg_ctl (binaries from `pg_config --bindir`) as the
`postgres` OS user (`runuser` when the tests run as root; PostgreSQL refuses to run as root)
in a temporary directory owned by that user, on a free port, listening on 127.0.0.1 with
trust authentication; initdb runs once per test process, and each cluster starts from a copy
of that pristine data directory (`_initialised`), which is what initdb would write again.
`archive_command` copies each finished segment into `archive/`, and
`base_backup()` runs pg_basebackup into `base/<n>/`, as an operator's setup would. Stopped
with `pg_ctl stop -m immediate` and removed afterwards.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fakes.parts import free_port, require, unavailable
from tests.fakes.waiting import wait_for

OS_USER = "postgres"
PREFIX = "rbt_pgc_"  # then the pid of the test process that made the cluster


def bindir() -> Path:
    """Return PostgreSQL's binary directory, or skip (fail on CI) when it is missing."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        unavailable("needs PostgreSQL server binaries: apt-get install postgresql-15")
    return Path(out.stdout.strip())


def as_postgres(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command as the postgres OS user (through runuser when we are root)."""
    prefix = ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, check=True, **kwargs)


def give_to_postgres(path: Path) -> None:
    """Hand a directory (recursively) to the postgres OS user."""
    if os.geteuid() == 0:
        shutil.chown(path, OS_USER, OS_USER)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(os.path.join(root, name), OS_USER, OS_USER)


_INITIALISED: list[Path] = []


def _initialised(bin: Path) -> Path:
    """A data directory fresh from initdb, made once per process and removed at its exit (or,
    after a kill, by the next run's `stop_orphans`)."""
    if not _INITIALISED:
        root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}_initdb_"))
        root.chmod(0o755)
        give_to_postgres(root)
        data = root / "data"
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        as_postgres([str(bin / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"])
        _INITIALISED.append(data)
    return _INITIALISED[0]


class ArchivedCluster:
    """A running cluster that archives its WAL and can take base backups."""

    def __init__(self, *, pgbackrest: bool = False) -> None:
        self.pgbackrest = pgbackrest
        self.stanza = "rbt"
        self.bin = bindir()
        stop_orphans()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}_"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.archive = self.root / "archive"
        self.base = self.root / "base"
        self.port = free_port()
        self.backups = 0
        for directory in (self.archive, self.base):
            directory.mkdir()
        give_to_postgres(self.root)

    def start(self) -> None:
        """Copy an initdb'd data directory, configure archiving and start the cluster."""
        shutil.copytree(_initialised(self.bin), self.data, symlinks=True)
        give_to_postgres(self.data)
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "logical",
            "archive_mode": "on",
            "archive_command": self._archive_command(),
            "track_commit_timestamp": "on",
            "max_prepared_transactions": "4",
            "max_wal_senders": "4",
            "fsync": "off",
            "timezone": "'UTC'",
        }
        with (self.data / "postgresql.conf").open("a") as out:
            out.writelines(f"{key} = {value}\n" for key, value in conf.items())
        as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "start",
            ]
        )

    @property
    def pgbackrest_config(self) -> Path:
        """The pgBackRest configuration of this cluster's stanza."""
        return self.root / "pgbackrest.conf"

    def _archive_command(self) -> str:
        if not self.pgbackrest:
            return f"'test ! -f {self.archive}/%f && cp %p {self.archive}/%f'"
        self.pgbackrest_config.write_text(
            "[global]\n"
            f"repo1-path={self.root / 'repo'}\n"
            f"lock-path={self.root / 'lock'}\n"
            "log-level-console=warn\nlog-level-file=off\nstart-fast=y\n"
            f"[{self.stanza}]\n"
            f"pg1-path={self.data}\npg1-port={self.port}\npg1-socket-path={self.root}\n"
        )
        give_to_postgres(self.root)
        return (
            f"'pgbackrest --config={self.pgbackrest_config} --stanza={self.stanza} archive-push %p'"
        )

    def pgbackrest_backup(self) -> None:
        """Create the stanza (first time) and take a full pgBackRest backup."""
        base = ["pgbackrest", f"--config={self.pgbackrest_config}", f"--stanza={self.stanza}"]
        if not (self.root / "repo").exists():
            as_postgres([*base, "stanza-create"])
        as_postgres([*base, "--type=full", "backup"])

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """Open an autocommit connection to the cluster."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def execute(self, dbname: str, statement: str) -> None:
        """Run SQL in one of the cluster's databases."""
        with self.connect(dbname) as conn:
            conn.execute(statement.encode())

    def next_second(self) -> None:
        """Wait until the server's clock has entered a later whole second than now.

        A backup's stop time and the points people pick are in whole seconds: two events a
        test must tell apart (a backup, then a write; two writes) must stand in different
        seconds of the server's clock, which is what this waits for, not a fixed pause.
        """
        with self.connect() as conn:

            def second() -> datetime:
                row = conn.execute("SELECT date_trunc('second', clock_timestamp())").fetchone()
                assert row is not None
                return row[0]  # type: ignore[no-any-return]

            start = second()
            wait_for(lambda: second() > start, timeout=10, what="the server's next second")

    def write(self, dbname: str, statement: str) -> datetime:
        """Run one write and return its commit time as the server recorded it."""
        with self.connect(dbname) as conn:
            with conn.transaction():
                conn.execute(statement.encode())
                xid = conn.execute("SELECT txid_current()::text::xid").fetchone()
            row = conn.execute("SELECT pg_xact_commit_timestamp(%s)", (xid[0] if xid else None,))
            found = row.fetchone()
        assert found is not None and found[0] is not None
        return found[0]

    def switch_wal(self) -> None:
        """Close the current segment and wait until that segment is in the archive."""
        with self.connect() as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert row is not None
            if self.pgbackrest:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
                    if done and done[0] and done[0][:24] >= row[0]:
                        return
                    time.sleep(0.1)
                raise RuntimeError(f"{row[0]} was not archived in 30 s")
        self.wait_archived(row[0])

    def wait_archived(self, pattern: str) -> None:
        """Wait until a file matching `pattern` is in the archive directory."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(self.archive.glob(pattern)):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{pattern} was not archived in 30 s; see {self.root / 'log'}")

    def base_backup(self) -> Path:
        """Take a plain-format base backup into base/<n>."""
        self.backups += 1
        target = self.base / str(self.backups)
        with self.connect() as conn:
            spaces = conn.execute(
                "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace"
                " WHERE spcname NOT IN ('pg_default', 'pg_global')"
            ).fetchall()
        # a tablespace is written where it is unless mapped, and its place is not empty
        mapping = [f"--tablespace-mapping={path}={target}_{name}" for name, path in spaces]
        as_postgres(
            [
                str(self.bin / "pg_basebackup"),
                *mapping,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-D",
                str(target),
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        )
        label = (target / "backup_label").read_text()
        segment = label.split("(file ", 1)[1].split(")", 1)[0]
        self.wait_archived(f"{segment}.*.backup")
        return target

    def stop(self) -> None:
        """Stop the cluster at once and remove every file of it."""
        with contextlib.suppress(subprocess.CalledProcessError):
            as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


def stop_orphans() -> None:
    """Stop and remove the scratch clusters whose test process (the pid in the directory's
    name) is gone: a run killed before its teardown leaves them running."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = re.fullmatch(rf"{PREFIX}(\d+)_\w+", root.name)
        if owner is None or Path(f"/proc/{owner.group(1)}").exists():
            continue
        if (root / "data" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                as_postgres(
                    [str(bindir() / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"]
                )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pgbackrest_cluster() -> Iterator[ArchivedCluster]:
    """Yield a running scratch cluster archiving to a pgBackRest stanza; remove it afterwards."""
    require("pgbackrest", package="pgbackrest")
    cluster = ArchivedCluster(pgbackrest=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def archived_cluster() -> Iterator[ArchivedCluster]:
    """Yield a running scratch cluster with WAL archiving; remove it afterwards."""
    cluster = ArchivedCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def unique_name() -> str:
    """Return a database name unique to this test."""
    return f"rbt_{uuid.uuid4().hex[:12]}"
