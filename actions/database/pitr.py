"""Self-hosted point-in-time recovery: WAL replay in a scratch instance, then a copy and a swap.

- Real PITR replays WAL: a base backup is restored into a scratch data directory of its own
  (PostgreSQL's continuous archiving: a `pg_basebackup` copy plus `restore_command`
  fetching segments from the WAL archive; or pgBackRest: `pgbackrest restore --type=time`),
  started with `pg_ctl` on its own port and Unix socket (no TCP listener, a trust-only
  `hba_file` of its own) with `recovery_target_time`, `recovery_target_inclusive` and
  `recovery_target_action = 'promote'`. The step waits for the promotion, quotes the
  server's own "recovery stopping ..." line, runs the verification queries there, creates
  `<db>_recovery` on the live server like the live database and copies the one database into
  it (pg_dump of the scratch instance, pg_restore --exit-on-error), then stops the scratch
  instance (`pg_ctl stop -m immediate`) and removes it. The live server is untouched until
  the swap (`selfhosted.SwapDatabases`).
- The window offered is the real one: from the earliest base backup's stop time (rounded
  up to the next second: the history file gives whole seconds, and PostgreSQL refuses a
  target before the backup is consistent) to the last commit in the archive (read with
  `pg_waldump` from the newest segments: a later target is never reached, and PostgreSQL 15
  stops with "recovery ended before configured recovery target was reached").
- A base backup whose `.backup` history file is not in the archive has no known stop time
  and is not offered; tar-format base backups are not read (plain format only).
- PostgreSQL refuses to run as root: when the bot is root, every command on the scratch
  instance runs as `run_as` (default `postgres`) through `runuser`.
- Resume: the scratch directory is recorded in `ctx.memory` before anything is copied;
  a re-run stops and removes a leftover one, and a finished restore (recorded by the
  recovery database's oid) is not done twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions import voice
from actions.base import PermanentError, PlanningError, StepContext, StepResult
from actions.database.migrations import Detected, table_identifier
from actions.database.names import iso
from actions.database.params import (
    DatabaseConnection,
    PgBackRest,
    Scratch,
    VerificationQuery,
    WalArchive,
)
from actions.database.pgtools import (
    ToolRun,
    conn_args,
    connect,
    maintenance,
    on_database,
    pg_restore,
    run_tool,
    step_errors,
)
from actions.database.selfhosted import (
    create_recovery,
    mark_restored,
    restore_result,
    restored_already,
)
from actions.database.verification import run_verification

SEGMENT = re.compile(r"[0-9A-F]{24}")
COMMIT = re.compile(r"desc: COMMIT(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
SCRATCH_KEY = "database.pitr_scratch:{}"


def exact(moment: datetime) -> str:
    """Format a recovery target: UTC, with microseconds when it has them."""
    return moment.astimezone(UTC).isoformat(sep=" ")


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


# -- what the archive holds


@dataclass(frozen=True)
class BaseBackup:
    """One base backup and the first second from which it can be recovered."""

    ref: str
    started: datetime
    usable_from: datetime


def label_fields(text: str) -> dict[str, str]:
    """Parse a backup_label or backup history file (`KEY: value` lines)."""
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if value
    )


def label_time(value: str) -> datetime:
    """Parse the `2026-11-28 02:53:38 UTC` of a backup label."""
    stamp, _, zone = value.rpartition(" ")
    if zone != "UTC":
        raise PlanningError(f"backup label time {value!r} is not in UTC")
    return datetime.strptime(f"{stamp} +0000", "%Y-%m-%d %H:%M:%S %z")


def archive_backups(archive: WalArchive) -> list[BaseBackup]:
    """List the plain-format base backups whose stop time the archive records, oldest first."""
    found = []
    directory = Path(archive.base_backups)
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():
        label = path / "backup_label"
        if not label.is_file():
            continue
        fields = label_fields(label.read_text())
        start = fields.get("START WAL LOCATION", "")
        history = _history(Path(archive.wal_archive), start)
        if history is None:
            continue
        stop = label_time(history["STOP TIME"]) + timedelta(seconds=1)
        found.append(BaseBackup(str(path), label_time(fields["START TIME"]), stop))
    return sorted(found, key=lambda b: b.usable_from)


def _history(wal: Path, start: str) -> dict[str, str] | None:
    segment = re.search(r"\(file ([0-9A-F]{24})\)", start)
    if segment is None:
        return None
    for path in wal.glob(f"{segment.group(1)}.*.backup"):
        fields = label_fields(path.read_text())
        if fields.get("START WAL LOCATION") == start and "STOP TIME" in fields:
            return fields
    return None


def commit_times(segment: Path, bindir: Path) -> list[datetime]:
    """Return the commit times recorded in one WAL segment (pg_waldump, times in UTC)."""
    run = run_tool(
        [str(bindir / "pg_waldump"), str(segment)], conn=None, timeout=120, env={"TZ": "UTC"}
    )
    return [
        datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
        for match in COMMIT.finditer(run.stdout)
    ]


def last_commit(segments: list[Path], bindir: Path, *, scan: int = 16) -> datetime | None:
    """Return the last commit time in the newest segments (up to `scan` of them)."""
    for segment in sorted(segments, key=lambda p: p.name, reverse=True)[:scan]:
        times = commit_times(segment, bindir)
        if times:
            return max(times)
    return None


def archive_window(archive: WalArchive) -> tuple[datetime, datetime]:
    """Return (earliest, latest) times PostgreSQL can recover to from this archive."""
    backups = archive_backups(archive)
    if not backups:
        raise PlanningError(
            f"no plain-format base backup in {archive.base_backups} has its .backup history "
            f"file (with its stop time) in {archive.wal_archive}"
        )
    wal = Path(archive.wal_archive)
    segments = [p for p in wal.iterdir() if SEGMENT.fullmatch(p.name)] if wal.is_dir() else []
    latest = last_commit(segments, bindir(archive))
    if latest is None:
        raise PlanningError(f"no commit found in the newest WAL segments of {wal}")
    if latest < backups[0].usable_from:
        raise PlanningError(
            f"the last archived commit ({iso(latest)}) is before the first base backup is "
            f"usable ({iso(backups[0].usable_from)})"
        )
    return backups[0].usable_from, latest


def pgbackrest_args(source: PgBackRest) -> list[str]:
    """Return the options every pgbackrest command gets."""
    config = [f"--config={source.config}"] if source.config else []
    return ["pgbackrest", *config, f"--stanza={source.stanza}"]


def pgbackrest_info(source: PgBackRest) -> dict[str, Any]:
    """Read `pgbackrest info --output=json` for the stanza."""
    run = run_tool(
        as_user(source, [*pgbackrest_args(source), "--output=json", "info"]),
        conn=None,
        timeout=120,
    )
    if run.returncode != 0:
        raise PlanningError(f"pgbackrest info failed: {run.tail() or run.stdout[-500:]}")
    stanzas = json.loads(run.stdout)
    if not stanzas:
        raise PlanningError(f"pgbackrest knows no stanza {source.stanza}")
    return dict(stanzas[0])


def pgbackrest_window(source: PgBackRest) -> tuple[datetime, datetime] | None:
    """Return (earliest, latest): first backup's stop (next second) to the last commit."""
    info = pgbackrest_info(source)
    backups = info.get("backup") or []
    archives = [a for a in info.get("archive") or [] if a.get("max")]
    if not backups or not archives:
        return None
    earliest = datetime.fromtimestamp(min(b["timestamp"]["stop"] for b in backups) + 1, tz=UTC)
    with tempfile.TemporaryDirectory(prefix="rollback-bot-wal-") as tmp:
        os.chmod(tmp, 0o777)  # noqa: S103 (a scratch directory pgBackRest's user writes to)
        latest = None
        newest = archives[-1]["max"]
        for segment in _previous_segments(newest, 16):
            target = Path(tmp) / segment
            run = run_tool(
                as_user(source, [*pgbackrest_args(source), "archive-get", segment, str(target)]),
                conn=None,
                timeout=120,
            )
            if run.returncode == 0 and target.exists():
                times = commit_times(target, bindir(source))
                if times:
                    latest = max(times)
                    break
    if latest is None or latest < earliest:
        return None
    return earliest, latest


def _previous_segments(newest: str, count: int) -> list[str]:
    """Name `newest` and the segments before it on its timeline (16 MB segments)."""
    timeline, log, seg = newest[:8], int(newest[8:16], 16), int(newest[16:], 16)
    names = []
    for _ in range(count):
        names.append(f"{timeline}{log:08X}{seg:08X}")
        if seg == 0:
            if log == 0:
                break
            log, seg = log - 1, 0xFF
        else:
            seg -= 1
    return names


# -- the default point: just before the change


@dataclass(frozen=True)
class KnownGood:
    """A time the database is known to have been good at, and why, for the default point."""

    moment: datetime
    label: str
    """`just before migration 002 was applied at 2026-12-07 10:04:21 UTC`."""
    later: str = ""
    """What a later point has in it: `after migration 002 was applied at ...`."""


TIME_COLUMNS = ("applied_at", "installed_on", "executed_at", "inserted_at", "created_at")
"""Migration-table columns that record when a row was written (timestamptz only: a
`timestamp without time zone` is in whatever zone the tool's session had)."""


def newest_migration(pg: psycopg.Connection[Any], found: Detected) -> KnownGood | None:
    """Return the moment just before the newest migration was applied, or None when the
    migration table does not say when.

    The time is the earliest of the row's timestamptz column (a `DEFAULT now()` is the start
    of the transaction that applied the migration) and the commit time of the row
    (`pg_xact_commit_timestamp(xmin)`, with track_commit_timestamp on): both are before the
    migration's changes became visible when the tool records the version in the migration's
    own transaction (Flyway for transactional migrations, Alembic, the procedures' script).
    golang-migrate does not: it rewrites its one row (dirty=false) after the migration has
    committed (golang-migrate migrate.go, runMigrations: SetVersion before and after Run), so
    its table gives no time before the change.
    """
    if found.tool == "golang-migrate":
        return None
    schema, _, name = found.table.rpartition(".")
    types = dict(
        pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (schema or "public", name),
        ).fetchall()
    )
    stamped = [c for c in TIME_COLUMNS if types.get(c) == "timestamp with time zone"]
    committed = pg.execute("SHOW track_commit_timestamp").fetchone() == ("on",)
    times: list[sql.Composable] = [sql.Identifier(c) for c in stamped[:1]]
    if committed:
        times.append(sql.SQL("pg_xact_commit_timestamp(xmin)"))
    if not times:
        return None
    version = "version_num" if found.tool == "alembic" else "version"
    where: sql.Composable = sql.SQL("WHERE version IS NOT NULL")
    if found.tool == "flyway":
        # the version's latest row (by installed_rank), applied: an undone version is not
        where += sql.SQL(
            " AND success AND type NOT IN ('UNDO_SQL', 'UNDO_JDBC', 'DELETE') AND NOT EXISTS"
            " (SELECT 1 FROM {} later WHERE later.version = {}.version"
            " AND later.installed_rank > {}.installed_rank)"
        ).format(
            table_identifier(found.table),
            sql.Identifier(name),
            sql.Identifier(name),
        )
    earliest = (
        times[0] if len(times) == 1 else sql.SQL("least({})").format(sql.SQL(", ").join(times))
    )
    row = pg.execute(
        sql.SQL("SELECT {}::text, {} AS at FROM {} {} ORDER BY at DESC NULLS LAST LIMIT 1").format(
            sql.Identifier(version),
            earliest,
            table_identifier(found.table),
            where if found.tool != "alembic" else sql.SQL(""),
        )
    ).fetchone()
    if row is None or row[1] is None:
        return None
    at = row[1].astimezone(UTC)
    said = f"migration {row[0]} was applied at {at:%Y-%m-%d %H:%M:%S} UTC"
    return KnownGood(at - timedelta(microseconds=1), f"just before {said}", f"after {said}")


# -- the scratch instance


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
        cls._give(settings, root)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        return cls(settings, root, port)

    @staticmethod
    def _give(settings: Scratch, path: Path) -> None:
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
        self._give(self.settings, self.tablespaces)
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
        self._give(self.settings, self.root)

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


# -- the step


@dataclass
class RestoreToTime:
    """Recover the cluster to a time in a scratch instance, verify, copy the database over."""

    conn: DatabaseConnection
    source: WalArchive | PgBackRest
    moment: datetime
    inclusive: bool
    base: str
    recovery: str
    jobs: int
    queries: tuple[VerificationQuery, ...]
    timeout: float
    name = "database.pitr_restore"
    idempotent = True

    def label(self) -> str:
        """The step's name for people."""
        return (
            f"Recover {self.conn.dbname} to {exact(self.moment)} into a new database "
            f"({self.recovery})"
        )

    def describe(self) -> str:
        """Say what is replayed to when, where, and what is copied into which database."""
        db = self.conn.dbname
        kept = "kept" if self.inclusive else "left out"
        return (
            f"Recover the cluster to {exact(self.moment)} (recovery_target_inclusive = "
            f"{'on' if self.inclusive else 'off'}: a transaction committed at exactly that time "
            f"is {kept}) in a scratch instance of its own (directory under "
            f"{self.source.directory or 'the temp directory'}, own port and socket, pg_ctl): "
            f"{self._how()}; check it stopped at the target and run the verification queries "
            f"there; create {self.recovery} like {db} and copy {db} into it (pg_dump | "
            f"pg_restore --exit-on-error); stop and remove the scratch instance. "
            f"{db} is not touched"
        )

    def _how(self) -> str:
        if isinstance(self.source, PgBackRest):
            return (
                f"pgbackrest --stanza={self.source.stanza} restore --type=time "
                f"--target='{exact(self.moment)}' --target-action=promote "
                "--tablespace-map-all=<scratch>/tablespaces"
                f"{'' if self.inclusive else ' --target-exclusive'}"
            )
        return (
            f"copy base backup {self.base} (and its tablespaces, into the scratch directory) "
            f"and replay WAL from {self.source.wal_archive} "
            "(restore_command cp)"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {
            "moment": self.moment.isoformat(),
            "inclusive": self.inclusive,
            "base": self.base,
            "recovery": self.recovery,
            "jobs": self.jobs,
        }

    def run(self, ctx: StepContext) -> StepResult:
        """Skip when done; else recover in scratch, verify there, copy, clean up."""
        with (
            step_errors(f"looking for {self.recovery}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            done = restored_already(pg, ctx.memory, live=self.conn.dbname, recovery=self.recovery)
        if done:
            return StepResult(summary=done, skipped=True)
        key = SCRATCH_KEY.format(self.recovery)
        if ctx.memory.get(key):
            remove_leftover(self.source, Path(ctx.memory[key]))
        instance = ScratchInstance.create(self.source)
        ctx.memory[key] = str(instance.root)
        try:
            return self._recover(ctx, instance)
        finally:
            instance.remove()
            ctx.memory[key] = None

    def _recover(self, ctx: StepContext, instance: ScratchInstance) -> StepResult:
        started = time.monotonic()
        ctx.emit(f"restoring into scratch instance {instance.root} (port {instance.port})")
        self._restore_files(instance, ctx)
        stopped = instance.start(user=self.conn.user, deadline=time.monotonic() + ctx.remaining())
        ctx.emit(f"scratch instance promoted: {stopped}")
        scratch = instance.connection(self.conn)
        with step_errors(f"verifying {self.conn.dbname} in the scratch instance"):
            table, failures = run_verification(scratch, self.queries, timeout=60.0)
        if failures:
            raise PermanentError(
                f"verification failed in the scratch instance at {exact(self.moment)}: "
                + "; ".join(failures)
                + f"\n{table}\n{self.conn.dbname} was not touched"
            )
        with step_errors(f"creating {self.recovery}"):
            create_recovery(self.conn, self.recovery, timeout=ctx.remaining())
        copy = instance.root / "copy.dump"
        run = run_tool(
            ["pg_dump", "--no-password", *conn_args(scratch), "--format=custom", f"--file={copy}"],
            conn=None,
            timeout=ctx.remaining(),
        )
        if run.returncode != 0:
            raise PermanentError(f"pg_dump from the scratch instance failed:\n{run.tail()}")
        restored = pg_restore(
            copy,
            conn=on_database(self.conn, self.recovery),
            jobs=self.jobs,
            timeout=ctx.remaining(),
        )
        with step_errors(f"recording the restore into {self.recovery}"):
            mark_restored(self.conn, self.recovery, ctx.memory)
        result = restore_result(restored, dump=copy, dbname=self.recovery)
        return StepResult(
            summary=f"Recovered {self.conn.dbname} to {exact(self.moment)} "
            f"({'inclusive' if self.inclusive else 'exclusive'}) in "
            f"{time.monotonic() - started:.1f} s and copied it into {self.recovery}; "
            f"server: {stopped}",
            output=f"verification in the scratch instance:\n{table}\n{result.output}",
            data={**result.data, "stopped": stopped, "moment": self.moment.isoformat()},
        )

    def _restore_files(self, instance: ScratchInstance, ctx: StepContext) -> None:
        if isinstance(self.source, PgBackRest):
            instance.data.mkdir(mode=0o700)
            ScratchInstance._give(self.source, instance.root)
            argv = [
                *pgbackrest_args(self.source),
                f"--pg1-path={instance.data}",
                # pgBackRest restores tablespaces to their original places unless told
                # (`pgbackrest help restore tablespace-map-all`): those are the live server's.
                f"--tablespace-map-all={instance.tablespaces}",
                "--type=time",
                f"--target={exact(self.moment)}",
                "--target-action=promote",
                *([] if self.inclusive else ["--target-exclusive"]),
                "restore",
            ]
            run = instance.run(argv, timeout=ctx.remaining())
            if run.returncode != 0:
                raise PermanentError(f"pgbackrest restore failed:\n{run.tail() or run.stdout}")
            instance.configure(self.moment, inclusive=self.inclusive, restore_command=None)
            return
        base = Path(self.base)
        if not (base / "backup_label").is_file():
            raise PermanentError(f"base backup {base} is gone; {self.conn.dbname} was not touched")
        run = instance.run(["cp", "-a", str(base), str(instance.data)], timeout=ctx.remaining())
        if run.returncode != 0:
            raise PermanentError(f"copying base backup {base} failed:\n{run.tail()}")
        for line in instance.relocate_tablespaces(timeout=ctx.remaining()):
            ctx.emit(line)
        wal = Path(self.source.wal_archive)
        instance.configure(
            self.moment, inclusive=self.inclusive, restore_command=f'cp "{wal}/%f" "%p"'
        )


def describe_loss(moment: datetime, *, inclusive: bool, db: str) -> str:
    """Say exactly which changes the restored database will not have."""
    edge = "after" if inclusive else "at or after"
    return (
        f"Changes committed {edge} {exact(moment)} are not in the restored database; the "
        f"current {db} is kept as {db}_pre_rollback_<time of the swap>"
    )


def choose_base(archive: WalArchive, moment: datetime) -> BaseBackup:
    """Return the newest base backup usable for `moment`."""
    usable = [b for b in archive_backups(archive) if b.usable_from <= moment]
    if not usable:
        raise PlanningError(f"no base backup in {archive.base_backups} ends before {iso(moment)}")
    return usable[-1]
