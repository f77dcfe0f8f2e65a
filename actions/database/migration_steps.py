"""The steps that undo migrations, one per tool, each keeping that tool's bookkeeping.

- procedures / Supabase CLI: run `rollback_<version>.sql` and delete the version's row in
  one transaction, so a failed script leaves the database at its version;
- golang-migrate, as `migrate down` runs (migrate.go runMigrations; database/postgres/
  postgres.go Run, SetVersion, Lock): under its advisory lock, the one row becomes
  (previous, dirty), `<version>_<name>.down.sql` goes to PostgreSQL as one batch with no
  transaction of the bot's (several statements are one implicit transaction, a lone
  `DROP INDEX CONCURRENTLY` runs as written), then the row becomes (previous, clean), or
  no row below the first. A failure leaves the row dirty, as golang-migrate leaves it; a
  dirty row is refused (`migrate force` is a person's call);
- Flyway: undo runs `U<version>__<description>.sql` in one transaction with its UNDO_SQL
  row (checksum, description and script as Flyway computes them), or statement by
  statement when it only holds statements PostgreSQL refuses in a transaction, as Flyway
  runs those;
- Alembic: revisions are Python, so the configured command runs
  `<command> downgrade <revision>`.

How the tool is detected and its bookkeeping read is in migrations.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions.base import PermanentError, PlanningError, StepContext, StepResult, TemporaryError
from actions.database.migrations import (
    GOLANG_NIL,
    alembic_current,
    flyway_applied,
    flyway_checksum,
    flyway_description,
    flyway_history,
    flyway_lock_id,
    golang_lock_id,
    golang_set_version,
    golang_state,
    table_identifier,
)
from actions.database.names import first_line
from actions.database.params import DatabaseConnection
from actions.database.pgtools import ToolRun, connect, run_tool
from actions.database.sqltext import outside_transaction, split


def _failed(conn: DatabaseConnection, version: str, error: Exception) -> PermanentError:
    return PermanentError(
        f"rolling back migration {version} failed, {conn.dbname} stays at version {version} "
        f"(script and bookkeeping were one transaction): {first_line(error)}"
    )


@dataclass
class RollbackMigration:
    """Procedures / Supabase CLI: run rollback_<version>.sql and delete the row, together."""

    conn: DatabaseConnection
    table: str
    version: str
    script: Path
    timeout: float
    name = "database.migration_rollback"
    idempotent = True

    def describe(self) -> str:
        """Say which script runs and which row goes."""
        return (
            f"On {self.conn.dbname}: run {self.script} and delete version {self.version} from "
            f"{self.table}, in one transaction"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"table": self.table, "version": self.version, "script": str(self.script)}

    def run(self, ctx: StepContext) -> StepResult:
        """Run the script and the delete together; skip when the row is already gone."""
        where = sql.SQL("FROM {} WHERE version::text = %s").format(table_identifier(self.table))
        try:
            with connect(self.conn, timeout=ctx.remaining()) as pg, pg.transaction():
                if pg.execute(sql.SQL("SELECT 1 ") + where, (self.version,)).fetchone() is None:
                    return StepResult(
                        summary=f"Migration {self.version} is already rolled back", skipped=True
                    )
                pg.execute(self.script.read_bytes())
                pg.execute(sql.SQL("DELETE ") + where, (self.version,))
        except psycopg.Error as error:
            raise _failed(self.conn, self.version, error) from error
        return StepResult(
            summary=f"Rolled back migration {self.version} with {self.script.name}",
            data={"version": self.version},
        )


@dataclass
class GolangMigrateDown:
    """golang-migrate: run <version>_*.down.sql as `migrate down` does; the row follows."""

    conn: DatabaseConnection
    table: str
    version: int
    previous: int | None
    script: Path
    timeout: float
    name = "database.golang_migrate_down"
    idempotent = True

    @property
    def target(self) -> int:
        """The version the row names while and after the file runs (NilVersion below 1)."""
        return GOLANG_NIL if self.previous is None else self.previous

    def describe(self) -> str:
        """Say which down file runs and what the row becomes."""
        after = "no row (nil version)" if self.previous is None else f"({self.previous}, false)"
        return (
            f"On {self.conn.dbname}: set {self.table} to ({self.target}, dirty), run "
            f"{self.script} as golang-migrate does (one statement batch, no transaction of "
            f"the bot's), then set it to {after} (golang-migrate down from {self.version})"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {
            "table": self.table,
            "version": self.version,
            "previous": self.previous,
            "script": str(self.script),
        }

    def run(self, ctx: StepContext) -> StepResult:
        """Under golang-migrate's lock: check the row, mark it dirty, run the file, clear it.

        migrate.go runMigrations: SetVersion(target, dirty=true), Run(body),
        SetVersion(target, false), the target of a down migration being the previous version.
        postgres.go Run hands the whole file to one Exec (x-multi-statement off), which
        PostgreSQL runs as one implicit transaction when it holds several statements and
        lets a single statement such as DROP INDEX CONCURRENTLY run on its own.
        """
        try:
            with connect(self.conn, timeout=ctx.remaining()) as pg:
                lock = golang_lock_id(self.conn.dbname, self.table)
                row = pg.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()
                if not (row and row[0]):
                    raise TemporaryError(
                        f"golang-migrate's lock on {self.table} is held: a migrate run is in "
                        "progress",
                        delay=5,
                    )
                return self._down(pg)
        except psycopg.Error as error:
            raise PermanentError(
                f"rolling back migration {self.version} failed: {first_line(error)}; {self.table}"
                f" is as golang-migrate would leave it (dirty at {self.target} if the file had "
                "started): a person checks the schema and runs migrate force"
            ) from error

    def _down(self, pg: psycopg.Connection[Any]) -> StepResult:
        state = golang_state(pg, self.table)
        if state == (None if self.previous is None else (self.previous, False)):
            return StepResult(
                summary=f"Migration {self.version} is already rolled back", skipped=True
            )
        if state == (self.target, True):
            raise PermanentError(
                f"{self.table} is dirty at {self.target}: the down file of {self.version} was "
                "started and did not finish; part of it may have run, so it is not run again. "
                f"A person checks the schema and runs migrate force"
            )
        if state != (self.version, False):
            raise PermanentError(
                f"{self.table} is at {state}, not ({self.version}, clean); nothing run"
            )
        golang_set_version(pg, self.table, self.target, dirty=True)
        text = self.script.read_bytes()
        if text.strip():
            pg.execute(text)
        golang_set_version(pg, self.table, self.target, dirty=False)
        return StepResult(
            summary=f"Rolled back migration {self.version} with {self.script.name}",
            data={"version": self.version, "now": self.previous},
        )


@dataclass
class FlywayUndo:
    """Flyway: run U<version>__*.sql and record its UNDO_SQL row, as Flyway Teams' undo does."""

    conn: DatabaseConnection
    table: str
    version: str
    script: Path
    timeout: float
    name = "database.flyway_undo"
    idempotent = True

    def describe(self) -> str:
        """Say which undo script runs and what is recorded."""
        return (
            f"On {self.conn.dbname}: run {self.script} and add an UNDO_SQL row for version "
            f"{self.version} to {self.table} ({self._how()})"
        )

    def _how(self) -> str:
        if self._outside():
            return "statement by statement outside a transaction, as Flyway runs it"
        return "in one transaction"

    def _outside(self, server_version: int = 150000) -> bool:
        text = self.script.read_text()
        return bool(outside_transaction(text, server_version=server_version))

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"table": self.table, "version": self.version, "script": str(self.script)}

    def run(self, ctx: StepContext) -> StepResult:
        """Skip a version already undone; else undo it and record it."""
        try:
            with connect(self.conn, timeout=ctx.remaining()) as pg:
                row = pg.execute(
                    "SELECT pg_try_advisory_lock(%s)", (flyway_lock_id(self.table),)
                ).fetchone()
                if not (row and row[0]):
                    raise TemporaryError(
                        f"Flyway's lock on {self.table} is held: a flyway run is in progress",
                        delay=5,
                    )
                history = flyway_history(pg, self.table)
                live = {r.version for r in flyway_applied(history, self.table)}
                if self.version not in live:
                    return StepResult(
                        summary=f"Migration {self.version} is already undone", skipped=True
                    )
                if self._outside(pg.info.server_version):
                    self._run_outside(pg)
                else:
                    started = time.monotonic()
                    with pg.transaction():
                        pg.execute(self.script.read_bytes())
                        self._record(pg, started, success=True)
        except psycopg.Error as error:
            raise _failed(self.conn, self.version, error) from error
        except PlanningError as error:
            raise PermanentError(str(error)) from error
        return StepResult(
            summary=f"Undid migration {self.version} with {self.script.name}",
            data={"version": self.version},
        )

    def _run_outside(self, pg: psycopg.Connection[Any]) -> None:
        """Flyway runs a migration whose statements cannot run in a transaction one statement
        at a time, and records a failed row when one fails, since nothing rolls back
        (DbMigrate: a failure outside a transaction is recorded with success = false)."""
        started = time.monotonic()
        try:
            for statement in split(self.script.read_text()):
                pg.execute(statement.encode())
        except psycopg.Error as error:
            self._record(pg, started, success=False)
            raise PermanentError(
                f"undoing migration {self.version} failed outside a transaction: "
                f"{first_line(error)}; part of {self.script.name} may have run. A failed "
                f"UNDO_SQL row is recorded in {self.table}, as Flyway records one: a person "
                "checks the schema and runs flyway repair"
            ) from error
        self._record(pg, started, success=True)

    def _record(self, pg: psycopg.Connection[Any], started: float, *, success: bool) -> None:
        """Insert the row Flyway's undo writes (JdbcTableSchemaHistory.doAddAppliedMigration:
        installed_rank max + 1, the version, the undo script's description, type, file name
        and checksum, the user, the time taken in ms, success).

        Validation accepts it: MigrationInfoImpl.validate skips undo rows and undone
        migrations (flyway-core 13) and only fails a failed row; the Pro builds that compared
        an undo row with its resolved U file (type, checksum, description) find the same
        values, since each is computed here as Flyway computes it.
        """
        table = table_identifier(self.table)
        millis = int((time.monotonic() - started) * 1000)
        text = self.script.read_text(encoding="utf-8")
        pg.execute(
            sql.SQL(
                "INSERT INTO {} (installed_rank, version, description, type, script, checksum,"
                " installed_by, execution_time, success)"
                " SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, 'UNDO_SQL', %s, %s,"
                " current_user, %s, %s FROM {}"
            ).format(table, table),
            (
                self.version,
                flyway_description(self.script),
                self.script.name,
                flyway_checksum(text),
                millis,
                success,
            ),
        )


@dataclass
class AlembicDowngrade:
    """Alembic: `<command> downgrade <revision>`, the database given in PG* variables."""

    conn: DatabaseConnection
    table: str
    command: list[str]
    directory: str | None
    revision: str
    timeout: float
    heads: tuple[str, ...] = ()
    """What alembic_version holds afterwards; empty: the revision alone."""
    name = "database.alembic_downgrade"
    idempotent = True

    @property
    def expected(self) -> list[str]:
        """The rows alembic_version holds once the downgrade is done."""
        return sorted(self.heads or (self.revision,))

    def describe(self) -> str:
        """Say which command runs where."""
        where = f" in {self.directory}" if self.directory else ""
        return (
            f"Run `{' '.join(self.command)} downgrade {self.revision}`{where} against "
            f"{self.conn.dbname} on {self.conn.host}:{self.conn.port} (PGHOST, PGPORT, PGUSER, "
            f"PGDATABASE set); check {self.table} holds {', '.join(self.expected)} afterwards"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"table": self.table, "revision": self.revision, "heads": self.expected}

    def run(self, ctx: StepContext) -> StepResult:
        """Skip when already there; else downgrade and check where it ended."""
        with connect(self.conn, timeout=ctx.remaining()) as pg:
            if alembic_current(pg, self.table) == self.expected:
                return StepResult(summary=f"Already at revision {self.revision}", skipped=True)
        run = run_alembic(self, ["downgrade", self.revision], timeout=ctx.remaining())
        with connect(self.conn, timeout=ctx.remaining()) as pg:
            now = alembic_current(pg, self.table)
        if run.returncode != 0 or now != self.expected:
            raise PermanentError(
                f"alembic downgrade to {self.revision} failed (exit {run.returncode}); "
                f"{self.table} now holds {', '.join(now) or 'nothing'}, expected "
                f"{', '.join(self.expected)}:\n{run.tail()}"
            )
        return StepResult(
            summary=f"Downgraded {self.conn.dbname} to {', '.join(self.expected)}",
            output=f"$ {run.command}\n{run.stderr}".strip(),
        )


def run_alembic(step: AlembicDowngrade, args: list[str], *, timeout: float) -> ToolRun:
    """Run the configured alembic command with the database in PG* variables."""
    conn = step.conn
    env = {
        "PGHOST": conn.host,
        "PGPORT": str(conn.port),
        "PGUSER": conn.user,
        "PGDATABASE": conn.dbname,
    }
    return run_tool([*step.command, *args], conn=conn, timeout=timeout, env=env, cwd=step.directory)
