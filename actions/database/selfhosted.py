"""Self-hosted PostgreSQL steps: backups on disk, pre-rollback backup, restore, PITR swap.

- Every destructive step is preceded by a pg_dump of the current state that is checked with
  `pg_restore --list` before the step reports success.
- Self-hosted "point in time" means the newest dump taken at or before the chosen time; the
  dump is restored into `<db>_recovery`, verified there, and swapped in. `ALTER DATABASE ...
  RENAME` fails while anyone is connected, so the swap refuses new connections first, ends
  the open sessions and retries the two renames (one transaction, run from the maintenance
  database) until they go through or the step's deadline passes. The database that was live
  is kept as `<db>_pre_rollback_<ts>`. How long connections were refused is reported.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions.base import PermanentError, StepContext, StepResult
from actions.clock import utcnow
from actions.database.names import first_line, human_duration, human_size, stamp
from actions.database.params import DatabaseConnection
from actions.database.pgtools import (
    ToolRun,
    allow_connections,
    conn_args,
    connect,
    database_comment,
    database_exists,
    inspect_archive,
    maintenance,
    on_database,
    pg_restore,
    run_tool,
    step_errors,
    terminate_sessions,
)

log = logging.getLogger(__name__)

RECOVERY_MARKER = "rollback-bot recovery database"


def restore_result(run: ToolRun, *, dump: Path, dbname: str) -> StepResult:
    size = dump.stat().st_size
    rate = size / max(run.seconds, 1e-3)
    return StepResult(
        summary=f"Restored {dump.name} into {dbname}: {human_size(size)} in "
        f"{run.seconds:.1f} s ({human_size(rate)}/s)",
        output=f"$ {run.command}\n{run.stderr}".strip(),
        data={
            "restore_bytes_per_second": rate,
            "bytes": size,
            "seconds": run.seconds,
            "command": run.command,
        },
    )


@dataclass(frozen=True)
class Backup:
    """One dump file in the backups directory."""

    path: Path
    taken_at: datetime
    size: int
    pre_rollback: bool = False

    def label(self, now: datetime) -> str:
        """Describe the backup for the modal: name, age, size."""
        kind = "pre-rollback backup" if self.pre_rollback else "backup"
        age = human_duration(max(0.0, (now - self.taken_at).total_seconds()))
        return f"{kind} {self.path.name} · {age} ago · {human_size(self.size)}"


def list_backups(directory: Path, dbname: str) -> list[Backup]:
    """List `<db>_<ts>.dump` and `pre_rollback_<db>_<ts>.dump` in `directory`, newest first."""
    pattern = re.compile(rf"(pre_rollback_)?{re.escape(dbname)}_(\d{{8}}_\d{{6}})\.dump")
    found = []
    for path in directory.glob("*.dump") if directory.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            taken = datetime.strptime(match.group(2), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
            found.append(Backup(path.resolve(), taken, path.stat().st_size, bool(match.group(1))))
    return sorted(found, key=lambda b: (b.taken_at, b.path.name), reverse=True)


@dataclass
class PreRollbackBackup:
    """pg_dump the current state (custom format) and check it reads back."""

    conn: DatabaseConnection
    directory: Path
    timeout: float
    now: Callable[[], datetime] = utcnow
    name = "database.pre_rollback_backup"
    idempotent = True

    def describe(self) -> str:
        """Say which database is dumped where."""
        db = self.conn.dbname
        return (
            f"Back up {db} on {self.conn.host}:{self.conn.port} with pg_dump (custom format) to "
            f"{self.directory}/pre_rollback_{db}_<time of this step>.dump and check it with "
            "pg_restore --list"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Dump to a partial file, check it, then move it into place."""
        key = f"database.pre_rollback_backup:{self.conn.dbname}"
        earlier = ctx.memory.get(key)
        if earlier and inspect_archive(Path(earlier)).readable:
            return StepResult(
                summary=f"Pre-rollback backup already taken: {earlier}", data={"path": earlier}
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"pre_rollback_{self.conn.dbname}_{stamp(self.now())}.dump"
        partial = final.with_name(f".{final.name}.partial")
        run = run_tool(
            [
                "pg_dump",
                "--no-password",
                *conn_args(self.conn),
                "--format=custom",
                f"--file={partial}",
            ],
            conn=self.conn,
            timeout=ctx.remaining(),
        )
        if run.returncode != 0:
            partial.unlink(missing_ok=True)
            raise PermanentError(f"pg_dump of {self.conn.dbname} failed:\n{run.tail()}")
        return self._keep(ctx, run=run, partial=partial, final=final, key=key)

    def _keep(
        self, ctx: StepContext, *, run: ToolRun, partial: Path, final: Path, key: str
    ) -> StepResult:
        info = inspect_archive(partial, timeout=max(ctx.remaining(), 1.0))
        if not info.readable:
            raise PermanentError(f"the pre-rollback backup does not read back: {info.error}")
        partial.chmod(0o600)
        partial.replace(final)
        ctx.memory[key] = str(final)
        size = final.stat().st_size
        log.info("%s: pre-rollback backup of %s at %s", ctx.incident_id, self.conn.dbname, final)
        return StepResult(
            summary=f"Backed up {self.conn.dbname} to {final} ({human_size(size)}, "
            f"{info.entries} entries, checked with pg_restore --list)",
            output=f"$ {run.command}\n{run.stderr}".strip(),
            data={"path": str(final), "bytes": size, "command": run.command},
        )


@dataclass
class RestoreBackup:
    """pg_restore --clean --if-exists a dump into the live database."""

    conn: DatabaseConnection
    dump: Path
    jobs: int
    timeout: float
    name = "database.restore_backup"
    idempotent = True

    def describe(self) -> str:
        """Say which dump replaces which database's contents."""
        jobs = f" --jobs={self.jobs}" if self.jobs > 1 else ""
        return (
            f"Replace the contents of {self.conn.dbname} on {self.conn.host}:{self.conn.port} "
            f"with {self.dump} (pg_restore --clean --if-exists{jobs})"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Restore and measure bytes per second."""
        if not self.dump.is_file():
            raise PermanentError(f"{self.dump} is gone")
        run = pg_restore(
            self.dump, conn=self.conn, jobs=self.jobs, clean=True, timeout=ctx.remaining()
        )
        log.info("%s: restored %s into %s", ctx.incident_id, self.dump, self.conn.dbname)
        return restore_result(run, dump=self.dump, dbname=self.conn.dbname)


@dataclass
class RestoreIntoRecovery:
    """Create the recovery database like the live one and restore a dump into it."""

    conn: DatabaseConnection
    dump: Path
    recovery: str
    jobs: int
    timeout: float
    name = "database.restore_into_recovery"
    idempotent = True

    def describe(self) -> str:
        """Say which dump goes into which new database."""
        return (
            f"Create database {self.recovery} (owner, encoding and collation of "
            f"{self.conn.dbname}) and restore {self.dump} into it with pg_restore"
            f"{f' --jobs={self.jobs}' if self.jobs > 1 else ''}; {self.conn.dbname} is not touched"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Replace a leftover recovery database of ours, create a fresh one, restore."""
        with (
            step_errors(f"creating {self.recovery}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            self._drop_leftover(pg)
            self._create(pg)
        target = on_database(self.conn, self.recovery)
        run = pg_restore(
            self.dump, conn=target, jobs=self.jobs, clean=False, timeout=ctx.remaining()
        )
        return restore_result(run, dump=self.dump, dbname=self.recovery)

    def _drop_leftover(self, pg: psycopg.Connection[Any]) -> None:
        if not database_exists(pg, self.recovery):
            return
        if database_comment(pg, self.recovery) != RECOVERY_MARKER:
            raise PermanentError(
                f"database {self.recovery} exists and was not made by the bot; rename or drop it"
            )
        pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.recovery)))

    def _create(self, pg: psycopg.Connection[Any]) -> None:
        row = pg.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype"
            " FROM pg_database WHERE datname = %s",
            (self.conn.dbname,),
        ).fetchone()
        if row is None:
            raise PermanentError(f"database {self.conn.dbname} does not exist")
        owner, encoding, collate, ctype = row
        pg.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 OWNER {} ENCODING {}"
                " LC_COLLATE {} LC_CTYPE {}"
            ).format(
                sql.Identifier(self.recovery),
                sql.Identifier(owner),
                sql.Literal(encoding),
                sql.Literal(collate),
                sql.Literal(ctype),
            )
        )
        pg.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(self.recovery), sql.Literal(RECOVERY_MARKER)
            )
        )


@dataclass
class SwapDatabases:
    """Put the recovery database in place of the live one, keeping the live one aside."""

    conn: DatabaseConnection
    recovery: str
    timeout: float
    now: Callable[[], datetime] = utcnow
    retry_delay: float = 0.2
    lock_wait: float = 5.0
    name = "database.swap"
    idempotent = True

    def describe(self) -> str:
        """Say which databases are renamed to what."""
        live = self.conn.dbname
        return (
            f"Refuse new connections to {live} and {self.recovery}, end their open sessions, "
            f"then in one transaction from database {self.conn.maintenance_dbname} rename {live} "
            f"to {live}_pre_rollback_<time of the swap> and {self.recovery} to {live}; "
            "allow connections again"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Swap, retrying while sessions are still closing; report the refusal time."""
        live = self.conn.dbname
        key = f"database.swap:{live}"
        aside = ctx.memory.get(key) or f"{live}_pre_rollback_{stamp(self.now())}"
        ctx.memory[key] = aside
        with (
            step_errors(f"swapping {self.recovery} in place of {live}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            if not database_exists(pg, self.recovery):
                return self._already_swapped(pg, aside=aside)
            return self._swap(pg, ctx, aside=aside)

    def _already_swapped(self, pg: psycopg.Connection[Any], *, aside: str) -> StepResult:
        live = self.conn.dbname
        if not database_exists(pg, aside):
            raise PermanentError(f"database {self.recovery} does not exist; nothing to swap in")
        allow_connections(pg, live, True)
        return StepResult(
            summary=f"{live} was already swapped; {aside} kept", data={"aside": aside}
        )

    def _swap(self, pg: psycopg.Connection[Any], ctx: StepContext, *, aside: str) -> StepResult:
        live = self.conn.dbname
        refused_at = time.monotonic()
        try:
            allow_connections(pg, live, False)
            allow_connections(pg, self.recovery, False)
            attempts, ended = self._rename(pg, ctx, aside=aside)
        finally:
            for name in (live, aside, self.recovery):
                allow_connections(pg, name, True)
            refused = time.monotonic() - refused_at
        log.info("%s: swapped %s in place of %s", ctx.incident_id, self.recovery, live)
        return StepResult(
            summary=f"{self.recovery} is now {live}; the previous {live} is kept as {aside}. "
            f"Connections were refused for {refused:.2f} s",
            output=f"ended {ended} session(s); renamed after {attempts} attempt(s)",
            data={
                "aside": aside,
                "connections_refused_seconds": refused,
                "sessions_ended": ended,
                "attempts": attempts,
            },
        )

    def _rename(
        self, pg: psycopg.Connection[Any], ctx: StepContext, *, aside: str
    ) -> tuple[int, int]:
        live, ended, attempts = self.conn.dbname, 0, 0
        while True:
            attempts += 1
            ended += terminate_sessions(pg, [live, self.recovery])
            try:
                with pg.transaction():
                    wait = int(
                        min(self.lock_wait, max(ctx.remaining() - self.retry_delay, 0.1)) * 1000
                    )
                    pg.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(f"{wait}ms"))
                    for old, new in ((live, aside), (self.recovery, live)):
                        pg.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(old), sql.Identifier(new)
                            )
                        )
                return attempts, ended
            except (psycopg.errors.ObjectInUse, psycopg.errors.LockNotAvailable) as error:
                if ctx.remaining() <= self.retry_delay:
                    raise PermanentError(
                        f"could not rename {live} after {attempts} attempts: {first_line(error)}"
                    ) from error
                ctx.emit(f"attempt {attempts}: {first_line(error)}; retrying")
                time.sleep(self.retry_delay)
