"""The scratch PostgreSQL instance point-in-time recovery replays WAL in, and how its tools run.

- The instance has a data directory of its own, started with `pg_ctl` on its own port and
  Unix socket (no TCP listener, a trust-only `hba_file` of its own); it is stopped with
  `pg_ctl stop -m immediate` and removed afterwards, or when a re-run finds it left over.
- PostgreSQL refuses to run as root: when the bot is root, every command on the scratch
  instance runs as `run_as` (default `postgres`) through `runuser`.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from actions import voice
from actions.base import PermanentError, PlanningError
from actions.database.names import exact, iso
from actions.database.params import DatabaseConnection, Scratch
from actions.database.pgtools import ToolRun, run_tool


def bindir(scratch: Scratch) -> Path:
    """Return PostgreSQL's binary directory: configured, or `pg_config --bindir`."""
    if scratch.bindir:
        return Path(scratch.bindir)
    found = shutil.which("pg_config")
    if found is None:
        raise PlanningError("pg_config is not on PATH; set bindir for point-in-time recovery")
    run = run_tool([found, "--bindir"], conn=None, timeout=30)
    return Path(run.stdout.strip())


def os_user(scratch: Scratch) -> str | None:
    """Return the OS user the scratch instance runs as (None: the bot's own)."""
    if scratch.run_as:
        return scratch.run_as
    return "postgres" if os.geteuid() == 0 else None


def as_user(scratch: Scratch, argv: list[str]) -> list[str]:
    """Prefix a command with runuser when it must run as another OS user."""
    user = os_user(scratch)
    if user is None or os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--", *argv]


@dataclass
class ScratchInstance:
    """A throw-away PostgreSQL instance: own directory, port and socket; removed afterwards."""

    settings: Scratch
    root: Path
    port: int

    @classmethod
    def create(cls, settings: Scratch) -> ScratchInstance:
        """Make the scratch directory, owned by the OS user the instance runs as."""
        parent = settings.directory or tempfile.gettempdir()
        root = Path(tempfile.mkdtemp(prefix="rollback-bot-pitr-", dir=parent))
        root.chmod(0o700)
        cls.give(settings, root)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        return cls(settings, root, port)

    @staticmethod
    def give(settings: Scratch, path: Path) -> None:
        user = os_user(settings)
        if user is None or os.geteuid() != 0:
            return
        shutil.chown(path, user, user)
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(os.path.join(top, name), user, user)

    @property
    def data(self) -> Path:
        """The scratch data directory."""
        return self.root / "data"

    @property
    def tablespaces(self) -> Path:
        """Where the scratch instance's tablespaces live: never where the backup's links point."""
        return self.root / "tablespaces"

    def relocate_tablespaces(self, *, timeout: float) -> list[str]:
        """Copy each tablespace of the copied base backup under the scratch root; relink.

        A plain-format base backup keeps its tablespaces outside itself: `pg_tblspc/<oid>`
        links to the directory pg_basebackup wrote them to (their original place, or where
        --tablespace-mapping said), and a low-level backup's `tablespace_map` names those
        directories, from which PostgreSQL recreates the links at start-up
        (src/backend/access/transam/xlogrecovery.c, read_tablespace_map). Started as copied,
        the scratch instance would replay WAL into the base backup's own tablespace copy or
        the live server's tablespace.
        """
        moved = []
        links = self.data / "pg_tblspc"
        for link in sorted(links.iterdir()) if links.is_dir() else ():
            if link.is_symlink():
                new = self._copy_tablespace(link.name, Path(os.readlink(link)), timeout)
                link.unlink()
                link.symlink_to(new)
                moved.append(f"tablespace {link.name}: {link.readlink()}")
        mapping = self.data / "tablespace_map"
        if mapping.is_file():
            lines = []
            for line in mapping.read_text().splitlines():
                oid, _, path = line.partition(" ")
                lines.append(f"{oid} {self._copy_tablespace(oid, Path(path), timeout)}")
            mapping.write_text("".join(f"{line}\n" for line in lines))
        return moved

    def _copy_tablespace(self, oid: str, source: Path, timeout: float) -> Path:
        target = self.tablespaces / oid
        self.tablespaces.mkdir(mode=0o700, exist_ok=True)
        self.give(self.settings, self.tablespaces)
        run = self.run(["cp", "-a", str(source), str(target)], timeout=timeout)
        if run.returncode != 0:
            raise PermanentError(f"copying tablespace {oid} from {source} failed:\n{run.tail()}")
        return target

    @property
    def log(self) -> Path:
        """The scratch server's log file."""
        return self.root / "server.log"

    def run(self, argv: list[str], *, timeout: float) -> ToolRun:
        """Run a command as the instance's OS user."""
        return run_tool(as_user(self.settings, argv), conn=None, timeout=timeout)

    def configure(self, target: datetime, *, inclusive: bool, restore_command: str | None) -> None:
        """Point the copied cluster at the target time, its own socket, port and hba file."""
        hba, ident = self.root / "hba.conf", self.root / "ident.conf"
        hba.write_text("local all all trust\n")
        ident.write_text("")
        conf = self.data / "postgresql.conf"
        if not conf.exists():
            conf.write_text("")
        for name in ("standby.signal", "postmaster.pid", "postmaster.opts"):
            (self.data / name).unlink(missing_ok=True)
        (self.data / "recovery.signal").write_text("")
        settings = {
            "port": str(self.port),
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.root}'",
            "hba_file": f"'{hba}'",
            "ident_file": f"'{ident}'",
            "archive_mode": "off",
            "hot_standby": "off",
            "logging_collector": "off",
            "cluster_name": "'rollback-bot-pitr'",
            "recovery_target_time": f"'{exact(target)}'",
            "recovery_target_inclusive": "on" if inclusive else "off",
            "recovery_target_action": "'promote'",
        }
        if restore_command is not None:
            settings["restore_command"] = "'" + restore_command.replace("'", "''") + "'"
        with (self.data / "postgresql.auto.conf").open("a") as out:
            out.write("\n# rollback-bot point-in-time recovery\n")
            out.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.give(self.settings, self.root)

    def start(self, *, user: str, deadline: float) -> str:
        """Start the instance and wait for the promotion; return the server's stop line."""
        pg_ctl = str(bindir(self.settings) / "pg_ctl")
        self.run(
            [pg_ctl, "-D", str(self.data), "-l", str(self.log), "-t", "60", "-w", "start"],
            timeout=120,
        )
        cadence = voice.Cadence()
        while time.monotonic() < deadline:
            if not (self.data / "postmaster.pid").exists():
                raise PermanentError(f"the scratch instance stopped:\n{self.log_tail()}")
            if self._promoted(user):
                return self.stop_line()
            if cadence.due():
                voice.say(self._replayed(user))
            time.sleep(0.2)
        raise PermanentError(f"WAL replay did not finish in time:\n{self.log_tail()}")

    def _replayed(self, user: str) -> str:
        """How far WAL replay got: the commit time of the last transaction replayed."""
        try:
            with psycopg.connect(
                host=str(self.root), port=self.port, user=user, dbname="postgres", connect_timeout=2
            ) as pg:
                row = pg.execute("SELECT pg_last_xact_replay_timestamp()").fetchone()
        except psycopg.OperationalError:
            return "replaying WAL: the scratch instance does not answer yet"
        if row is None or row[0] is None:
            return "replaying WAL: no transaction replayed yet"
        return f"WAL replayed to {iso(row[0])}"

    def _promoted(self, user: str) -> bool:
        try:
            with psycopg.connect(
                host=str(self.root),
                port=self.port,
                user=user,
                dbname="postgres",
                connect_timeout=2,
            ) as pg:
                row = pg.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.OperationalError:
            return False
        return row is not None and row[0] is False

    def log_tail(self, lines: int = 15) -> str:
        """Return the end of the scratch server's log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop_line(self) -> str:
        """Quote where recovery stopped, from the server's log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        found = [
            line.split("LOG:", 1)[-1].strip()
            for line in text.splitlines()
            if "recovery stopping" in line or "last completed transaction" in line
        ]
        return "; ".join(found) or "recovery reached the end of the archive before the target"

    def connection(self, conn: DatabaseConnection) -> DatabaseConnection:
        """Return a connection to the same database in the scratch instance."""
        return DatabaseConnection(
            host=str(self.root), port=self.port, user=conn.user, dbname=conn.dbname
        )

    def remove(self) -> None:
        """Stop the instance at once (if running) and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            pg_ctl = str(bindir(self.settings) / "pg_ctl")
            self.run([pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def remove_leftover(settings: Scratch, path: Path) -> None:
    """Stop and delete a scratch instance an interrupted run left behind."""
    if path.name.startswith("rollback-bot-pitr-") and path.is_dir():
        ScratchInstance(settings, path, 0).remove()
