"""Self-hosted PostgreSQL steps: backups on disk, pre-rollback backup, restore, swap.

- Every destructive step is preceded by a pg_dump of the current state that is read back
  whole (`inspect_archive`) before the step reports success.
- Nothing live is touched until a restore is proven: every restore (the backup method, a
  dump-based rollback to a time, and the copy out of a PITR scratch cluster) goes into a new
  `<db>_recovery` database, whole, with errors fatal (`--exit-on-error`, one transaction
  where pg_restore allows it); the verification queries run there; then `SwapDatabases`
  renames. There is no `pg_restore --clean` on the live database: a half-failed clean restore
  empties it, and leaves the tables the bad release created.
- The recovery database carries the bot's marker as its comment until the rename
  transaction, which gives it the live database's comment; so the marker never ends up on the
  live database, and a leftover of ours can be told from somebody else's database.
- The swap: `ALTER DATABASE ... RENAME` fails while anyone is connected, so it refuses new
  connections first, ends the open sessions (each listed in the step output) and retries the
  renames (one transaction from the maintenance database, a short `lock_timeout`, a bounded
  number of attempts). The database-level state of the live database is copied onto the
  recovery database in the same transaction (`properties`). The database that was live is
  kept as `<db>_pre_rollback_<time of the swap>`, its comment saying what replaced it, in
  which incident, and what its own comment was.
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
from actions.database.names import first_line, human_duration, human_size, iso, stamp
from actions.database.params import DatabaseConnection
from actions.database.pgtools import (
    SWAP_KEY,
    Session,
    ToolRun,
    allow_connections,
    conn_args,
    connect,
    database_comment,
    database_exists,
    file_size,
    inspect_archive,
    maintenance,
    on_database,
    pg_restore,
    prepared_transactions,
    run_tool,
    step_errors,
    terminate_sessions,
)
from actions.database.properties import (
    DatabaseProperties,
    align_default_privileges,
    align_extensions,
    apply_properties,
    create_like,
    default_privileges,
    extensions,
    read_properties,
    read_shape,
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
    """pg_dump the current state (custom format) and check it reads back.

    `aside`: dump the database the swap set aside (`<db>_pre_rollback_<time of the swap>`)
    instead of the live one, after maintenance mode is off. Nobody writes to it, so the dump
    holds the state at the swap exactly, and the site is not down while it is taken; the file
    is named for the time of the swap.
    """

    conn: DatabaseConnection
    directory: Path
    timeout: float
    now: Callable[[], datetime] = utcnow
    aside: bool = False
    name = "database.pre_rollback_backup"
    idempotent = True

    def describe(self) -> str:
        """Say which database is dumped where."""
        db = self.conn.dbname
        if self.aside:
            return (
                f"Back up {db}_pre_rollback_<time of the swap> (the {db} the swap set aside; "
                f"nobody writes to it) on {self.conn.host}:{self.conn.port} with pg_dump (custom "
                f"format) to {self.directory}/pre_rollback_{db}_<time of the swap>.dump and "
                "read it back whole with pg_restore, after maintenance mode is off"
            )
        return (
            f"Back up {db} on {self.conn.host}:{self.conn.port} with pg_dump (custom format) to "
            f"{self.directory}/pre_rollback_{db}_<time of this step>.dump and read it back "
            "whole with pg_restore"
        )

    def label(self) -> str:
        """Words for people."""
        if self.aside:
            return "Back up the replaced database"
        return "Back up the database before the rollback"

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step (the directory comes from the config)."""
        return {"aside": True} if self.aside else {}

    def _source(self, ctx: StepContext) -> tuple[DatabaseConnection, str]:
        """The database to dump, and the time its file is named for."""
        live = self.conn.dbname
        if not self.aside:
            return self.conn, stamp(self.now())
        aside = ctx.memory.get(SWAP_KEY.format(live))
        if not isinstance(aside, str):
            raise PermanentError(
                f"no swap of {live} is on record; nothing was set aside to back up"
            )
        return on_database(self.conn, aside), aside.removeprefix(f"{live}_pre_rollback_")

    def run(self, ctx: StepContext) -> StepResult:
        """Dump to a partial file, check it, then move it into place."""
        key = f"database.pre_rollback_backup:{self.conn.dbname}"
        earlier = ctx.memory.get(key)
        if earlier and inspect_archive(Path(earlier)).readable:
            return StepResult(
                summary=f"Pre-rollback backup already taken: {earlier}",
                skipped=True,
                data={"path": earlier},
            )
        source, taken = self._source(ctx)
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"pre_rollback_{self.conn.dbname}_{taken}.dump"
        partial = final.with_name(f".{final.name}.partial")
        run = run_tool(
            [
                "pg_dump",
                "--no-password",
                *conn_args(source),
                "--format=custom",
                f"--file={partial}",
            ],
            conn=source,
            timeout=ctx.remaining(),
            watch=file_size(partial),
        )
        if run.returncode != 0:
            partial.unlink(missing_ok=True)
            raise PermanentError(f"pg_dump of {source.dbname} failed:\n{run.tail()}")
        what = f"{source.dbname} (set aside at the swap)" if self.aside else source.dbname
        return self._keep(ctx, run=run, partial=partial, final=final, key=key, what=what)

    def _keep(
        self, ctx: StepContext, *, run: ToolRun, partial: Path, final: Path, key: str, what: str
    ) -> StepResult:
        info = inspect_archive(partial, timeout=max(ctx.remaining(), 1.0))
        if not info.readable:
            raise PermanentError(f"the pre-rollback backup does not read back: {info.error}")
        partial.chmod(0o600)
        partial.replace(final)
        ctx.memory[key] = str(final)
        size = final.stat().st_size
        log.info("%s: pre-rollback backup of %s at %s", ctx.incident_id, what, final)
        return StepResult(
            summary=f"Backed up {what} to {final} ({human_size(size)}, "
            f"{info.entries} entries, read back whole)",
            output=f"$ {run.command}\n{run.stderr}".strip(),
            data={"path": str(final), "bytes": size, "command": run.command},
        )


RESTORED_KEY = "database.restore_into_recovery:{}"


def drop_leftover_recovery(pg: psycopg.Connection[Any], recovery: str) -> None:
    """Drop a recovery database an earlier run of the bot left; refuse anyone else's."""
    if not database_exists(pg, recovery):
        return
    if database_comment(pg, recovery) != RECOVERY_MARKER:
        raise PermanentError(
            f"database {recovery} exists and was not made by the bot; rename or drop it"
        )
    pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(recovery)))


def create_recovery(conn: DatabaseConnection, recovery: str, *, timeout: float) -> None:
    """Create the recovery database like the live one (owner, encoding, locale provider and
    locales, tablespace: `properties.DatabaseShape`; extensions).

    Extensions of the live database that sit in `public` are created first at the live
    versions: pg_dump writes `CREATE EXTENSION IF NOT EXISTS`, so the restore keeps them
    instead of installing the default version.
    """
    with connect(maintenance(conn), timeout=timeout) as pg:
        drop_leftover_recovery(pg, recovery)
        owner = read_properties(pg, conn.dbname).owner
        pg.execute(create_like(recovery, owner=owner, shape=read_shape(pg, conn.dbname)))
        pg.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(recovery), sql.Literal(RECOVERY_MARKER)
            )
        )
    with connect(conn, timeout=timeout) as live:
        wanted = {n: v for n, v in extensions(live).items() if v[1] == "public"}
    with connect(on_database(conn, recovery), timeout=timeout) as rec:
        align_extensions(rec, wanted)


def same_shape(pg: psycopg.Connection[Any], *, live: str, recovery: str) -> None:
    """Refuse a recovery database whose encoding, locales or tablespace differ from live's:
    its text would sort (and its indexes order) otherwise than the live database's."""
    want, have = read_shape(pg, live), read_shape(pg, recovery)
    if want != have:
        raise PermanentError(
            f"{recovery} is {have.line()}; {live} is {want.line()}. Nothing was renamed: "
            f"drop {recovery} and run the rollback again"
        )


def restored_already(
    conn: DatabaseConnection, ctx: StepContext, *, recovery: str, doing: str
) -> StepResult | None:
    """The skipped result of a restore into `recovery` done before, or None when it must run."""
    with step_errors(doing), connect(maintenance(conn), timeout=ctx.remaining()) as pg:
        done = _why_restored(pg, ctx.memory, live=conn.dbname, recovery=recovery)
    return StepResult(summary=done, skipped=True) if done else None


def _why_restored(
    pg: psycopg.Connection[Any], memory: Any, *, live: str, recovery: str
) -> str | None:
    """Say why the restore into `recovery` need not run again, or None when it must."""
    done = memory.get(RESTORED_KEY.format(recovery))
    if not done:
        return None
    row = pg.execute("SELECT oid FROM pg_database WHERE datname = %s", (recovery,)).fetchone()
    if row is not None and int(row[0]) == done:
        return f"{recovery} was already restored"
    aside = memory.get(SWAP_KEY.format(live))
    if row is None and aside and database_exists(pg, aside):
        return f"{recovery} was already restored and swapped in ({live}; previous kept as {aside})"
    return None


def mark_restored(conn: DatabaseConnection, recovery: str, memory: Any) -> None:
    """Remember (durably) which database the finished restore went into, by oid."""
    with connect(maintenance(conn)) as pg:
        row = pg.execute("SELECT oid FROM pg_database WHERE datname = %s", (recovery,)).fetchone()
    memory[RESTORED_KEY.format(recovery)] = int(row[0]) if row else None


@dataclass
class RestoreIntoRecovery:
    """Create the recovery database like the live one and restore a dump into it, whole."""

    conn: DatabaseConnection
    dump: Path
    recovery: str
    jobs: int
    timeout: float
    name = "database.restore_into_recovery"
    idempotent = True

    def label(self) -> str:
        """The step's name for people."""
        return f"Restore {self.dump.name} into a new database ({self.recovery})"

    def describe(self) -> str:
        """Say which dump goes into which new database."""
        how = f"--jobs={self.jobs}" if self.jobs > 1 else "--single-transaction"
        return (
            f"Create database {self.recovery} (owner, encoding, locale provider and locales, "
            f"tablespace and extension versions of {self.conn.dbname}) and restore {self.dump} "
            f"into it with pg_restore --exit-on-error {how}; {self.conn.dbname} is not touched"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"dump": str(self.dump), "recovery": self.recovery, "jobs": self.jobs}

    def run(self, ctx: StepContext) -> StepResult:
        """Skip when done; else replace a leftover recovery database of ours and restore."""
        if not self.dump.is_file():
            raise PermanentError(f"{self.dump} is gone; {self.conn.dbname} was not touched")
        done = restored_already(
            self.conn, ctx, recovery=self.recovery, doing=f"creating {self.recovery}"
        )
        if done is not None:
            return done
        with step_errors(f"creating {self.recovery}"):
            create_recovery(self.conn, self.recovery, timeout=ctx.remaining())
        target = on_database(self.conn, self.recovery)
        try:
            run = pg_restore(self.dump, conn=target, jobs=self.jobs, timeout=ctx.remaining())
        except PermanentError as error:
            raise PermanentError(
                f"{error}\n{self.conn.dbname} was not touched; {self.recovery} is left for "
                "inspection and replaced by the next run"
            ) from error
        with step_errors(f"recording the restore into {self.recovery}"):
            mark_restored(self.conn, self.recovery, ctx.memory)
        return restore_result(run, dump=self.dump, dbname=self.recovery)


@dataclass
class SwapDatabases:
    """Put the recovery database in place of the live one, keeping the live one aside.

    Everything of the live database but its data goes with the name: owner, ACL, settings,
    role-in-database settings, comment, connection limit (in the rename transaction),
    extension versions and default privileges (on the recovery database just before).
    """

    conn: DatabaseConnection
    recovery: str
    timeout: float
    now: Callable[[], datetime] = utcnow
    source: str = "a restore"
    retry_delay: float = 0.2
    lock_wait: float = 2.0
    max_attempts: int = 5
    name = "database.swap"
    idempotent = True

    def describe(self) -> str:
        """Say which databases are renamed to what."""
        live = self.conn.dbname
        return (
            f"Copy the database-level state of {live} (owner, ACL, settings, role-in-database "
            f"settings, comment, connection limit, extension versions, default privileges) onto "
            f"{self.recovery}; refuse new connections to both, end their sessions (each listed), "
            f"then in one transaction from database {self.conn.maintenance_dbname} rename {live} "
            f"to {live}_pre_rollback_<time of the swap> and {self.recovery} to {live} (lock "
            f"timeout {self.lock_wait:g} s, at most {self.max_attempts} attempts); allow "
            f"connections again. {self.recovery} holds {self.source}"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"recovery": self.recovery, "source": self.source}

    def run(self, ctx: StepContext) -> StepResult:
        """Swap, retrying while sessions are still closing; report the refusal time."""
        live = self.conn.dbname
        key = SWAP_KEY.format(live)
        aside = ctx.memory.get(key) or f"{live}_pre_rollback_{stamp(self.now())}"
        ctx.memory[key] = aside
        with (
            step_errors(f"swapping {self.recovery} in place of {live}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            if not database_exists(pg, self.recovery):
                return self._already_swapped(pg, aside=aside)
            if database_comment(pg, self.recovery) != RECOVERY_MARKER:
                raise PermanentError(
                    f"database {self.recovery} was not made by the bot; nothing was renamed"
                )
            same_shape(pg, live=live, recovery=self.recovery)
            prepared = prepared_transactions(pg, [live, self.recovery])
            if prepared:
                raise PermanentError(
                    f"prepared transaction(s) {'; '.join(prepared)}: a database cannot be "
                    "renamed while one exists, and ending sessions does not end it; COMMIT "
                    "PREPARED or ROLLBACK PREPARED it, then run the rollback again. Nothing was "
                    "renamed"
                )
            # A run killed while connections were refused left them refused; the copy of
            # extensions and default privileges below needs to connect to both.
            allow_connections(pg, live, True)
            allow_connections(pg, self.recovery, True)
            aligned = self._align()
            wanted = read_properties(pg, live)
            return self._swap(pg, ctx, aside=aside, wanted=wanted, aligned=aligned)

    def _align(self) -> list[str]:
        with connect(self.conn) as live:
            wanted_ext = extensions(live)
            wanted_acl = default_privileges(live)
        with connect(on_database(self.conn, self.recovery)) as rec:
            return [*align_extensions(rec, wanted_ext), *align_default_privileges(rec, wanted_acl)]

    def _already_swapped(self, pg: psycopg.Connection[Any], *, aside: str) -> StepResult:
        live = self.conn.dbname
        if not database_exists(pg, aside):
            raise PermanentError(f"database {self.recovery} does not exist; nothing to swap in")
        allow_connections(pg, live, True)
        allow_connections(pg, aside, True)
        return StepResult(
            summary=f"{live} was already swapped; {aside} kept",
            skipped=True,
            data={"aside": aside},
        )

    def _swap(
        self,
        pg: psycopg.Connection[Any],
        ctx: StepContext,
        *,
        aside: str,
        wanted: DatabaseProperties,
        aligned: list[str],
    ) -> StepResult:
        live = self.conn.dbname
        refused_at = time.monotonic()
        try:
            allow_connections(pg, live, False)
            allow_connections(pg, self.recovery, False)
            attempts, ended, copied = self._rename(pg, ctx, aside=aside, wanted=wanted)
        finally:
            for name in (live, aside, self.recovery):
                allow_connections(pg, name, True)
            refused = time.monotonic() - refused_at
        log.info("%s: swapped %s in place of %s", ctx.incident_id, self.recovery, live)
        lines = [f"ended session: {s.line()}" for s in ended]
        lines += [f"copied from {live}: {line}" for line in [*aligned, *copied]]
        lines.append(f"renamed after {attempts} attempt(s)")
        return StepResult(
            summary=f"{self.recovery} is now {live}; the previous {live} is kept as {aside}. "
            f"Connections were refused for {refused:.2f} s; {len(ended)} session(s) ended",
            output="\n".join(lines),
            data={
                "aside": aside,
                "connections_refused_seconds": refused,
                "sessions_ended": len(ended),
                "sessions": [s.line() for s in ended],
                "attempts": attempts,
            },
        )

    def _rename(
        self,
        pg: psycopg.Connection[Any],
        ctx: StepContext,
        *,
        aside: str,
        wanted: DatabaseProperties,
    ) -> tuple[int, list[Session], list[str]]:
        live, ended = self.conn.dbname, []
        for attempt in range(1, self.max_attempts + 1):
            for session in terminate_sessions(pg, [live, self.recovery]):
                ctx.emit(f"ended session: {session.line()}")
                ended.append(session)
            try:
                with pg.transaction():
                    wait = int(
                        min(self.lock_wait, max(ctx.remaining() - self.retry_delay, 0.1)) * 1000
                    )
                    pg.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(f"{wait}ms"))
                    copied = apply_properties(pg, self.recovery, wanted)
                    for old, new in ((live, aside), (self.recovery, live)):
                        pg.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(old), sql.Identifier(new)
                            )
                        )
                    note = (
                        f"rollback-bot: this was {live} until {iso(self.now())}, replaced by "
                        f"{self.source} in incident {ctx.incident_id}"
                    )
                    if wanted.comment:
                        note += f"; its comment was: {wanted.comment}"
                    pg.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            sql.Identifier(aside), sql.Literal(note)
                        )
                    )
                return attempt, ended, copied
            except (psycopg.errors.ObjectInUse, psycopg.errors.LockNotAvailable) as error:
                if attempt == self.max_attempts or ctx.remaining() <= self.retry_delay:
                    raise PermanentError(
                        f"could not rename {live} after {attempt} attempts: {first_line(error)}; "
                        f"{live} is unchanged and open again, {self.recovery} is kept"
                    ) from error
                ctx.emit(f"attempt {attempt}: {first_line(error)}; retrying")
                time.sleep(self.retry_delay)
        raise AssertionError("unreachable")
