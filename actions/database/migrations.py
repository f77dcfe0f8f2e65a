"""Migration rollback with the migration tool the database actually uses.

- The tool is detected from its bookkeeping table, never assumed: Flyway
  (`flyway_schema_history`), Alembic (`alembic_version`), Supabase CLI
  (`supabase_migrations.schema_migrations`), golang-migrate (a one-row `schema_migrations`
  with `version bigint` and `dirty boolean`) or the procedures' own format (a
  `schema_migrations` with a text `version` per applied migration). Anything else is refused
  naming the tables that were found; Prisma (`_prisma_migrations`) has no down migrations.
- Each tool's bookkeeping is kept the way that tool keeps it:
  - procedures / Supabase CLI: run `rollback_<version>.sql`, delete the version's row;
  - golang-migrate (database/postgres/postgres.go, SetVersion: TRUNCATE then INSERT the new
    version unless it is the nil version): run `<version>_<name>.down.sql`, then the one row
    becomes the previous version (no row below the first); a `dirty` row is refused (a
    migration failed half-way; a person decides, `migrate force` is not the bot's call);
  - Flyway: versions compare as Flyway's MigrationVersion does (numeric parts, so
    1.9 < 1.10 < 1.11); the effective state of a version is its latest row (an `UNDO_SQL`
    row undoes it); repeatable (`R__`, no version) rows are not versions and are never
    undone; a failed row (`success = false`) is refused (Flyway wants `repair` first). Undo
    runs `U<version>__<description>.sql` and inserts an `UNDO_SQL` row as Flyway Teams does;
  - Alembic: revisions are Python, so the configured command runs
    `<command> downgrade <revision>`; the revision chain comes from `<command> history`.
- The script and the bookkeeping change run in one transaction per migration, so a failed
  script leaves the database at its version. A rollback needing a down script that is
  missing is refused at plan time, before anything runs; there is no `force` that would only
  delete bookkeeping rows and leave the schema changes in place.
- Scripts come from the configured migrations directory, never from Slack; table names are
  quoted with psycopg.sql.Identifier.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from actions.base import PermanentError, PlanningError, StepContext, StepResult
from actions.database.names import first_line
from actions.database.params import DatabaseConnection
from actions.database.pgtools import ToolRun, connect, run_tool

Tool = Literal["procedures", "supabase", "golang-migrate", "flyway", "alembic"]

TOOL_NAMES: dict[Tool, str] = {
    "procedures": "the procedures' schema_migrations + rollback_<version>.sql",
    "supabase": "Supabase CLI (supabase_migrations.schema_migrations)",
    "golang-migrate": "golang-migrate",
    "flyway": "Flyway",
    "alembic": "Alembic",
}


def version_key(version: str) -> tuple[int, tuple[int, ...], str]:
    """Order versions by their numeric parts (1.9 < 1.10 < 1.11), then the rest by text."""
    parts = re.split(r"[._]", version)
    if all(p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts), version)
    return (1, (), version)


def table_identifier(name: str) -> sql.Identifier:
    """Quote `schema.table` or `table` as an identifier."""
    return sql.Identifier(*name.split("."))


# -- detection


@dataclass(frozen=True)
class Detected:
    """The migration tool a database uses and its bookkeeping table."""

    tool: Tool
    table: str

    @property
    def label(self) -> str:
        """Name the tool for the plan."""
        return f"{TOOL_NAMES[self.tool]}, table {self.table}"


def _tables(pg: psycopg.Connection[Any], configured: str) -> list[tuple[str, str]]:
    return [
        (schema, name)
        for schema, name in pg.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND (c.relname ~ '(migration|version|schema_history)' OR c.relname = %s)"
            " ORDER BY 1, 2",
            (configured.split(".")[-1],),
        ).fetchall()
    ]


def _columns(pg: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    return dict(
        pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchall()
    )


def detect(pg: psycopg.Connection[Any], configured: str) -> Detected:
    """Tell the migration tool from the tables present; refuse anything unknown."""
    found: list[Detected] = []
    tables = _tables(pg, configured)
    for schema, name in tables:
        qualified = name if schema == "public" else f"{schema}.{name}"
        if name == "flyway_schema_history":
            found.append(Detected("flyway", qualified))
        elif name == "alembic_version":
            found.append(Detected("alembic", qualified))
        elif (schema, name) == ("supabase_migrations", "schema_migrations"):
            found.append(Detected("supabase", qualified))
        elif qualified == configured or name == "schema_migrations":
            columns = _columns(pg, schema, name)
            if columns.get("dirty") == "boolean" and columns.get("version") == "bigint":
                found.append(Detected("golang-migrate", qualified))
            elif "version" in columns and "dirty" not in columns:
                found.append(Detected("procedures", qualified))
    chosen = [d for d in found if d.table == configured] or found
    if len(chosen) == 1:
        return chosen[0]
    names = ", ".join(f"{s}.{n}" for s, n in tables) or "no migration-like table"
    if not found:
        prisma = " (Prisma has no down migrations: use the backup or pitr method)"
        hint = prisma if any(n == "_prisma_migrations" for _, n in tables) else ""
        raise PlanningError(f"no migration table of a supported tool: found {names}{hint}")
    raise PlanningError(
        f"several migration tables ({', '.join(d.label for d in found)}); set "
        "migrations_table to the one in use"
    )


# -- reading what is applied


def applied_simple(pg: psycopg.Connection[Any], table: str) -> list[str]:
    """Versions in a one-row-per-migration table (procedures, Supabase), newest first."""
    rows = pg.execute(
        sql.SQL("SELECT version::text FROM {}").format(table_identifier(table))
    ).fetchall()
    return sorted((str(row[0]) for row in rows), key=version_key, reverse=True)


def golang_state(pg: psycopg.Connection[Any], table: str) -> tuple[int, bool] | None:
    """Return golang-migrate's (version, dirty), or None when no migration is applied."""
    rows = pg.execute(
        sql.SQL("SELECT version, dirty FROM {}").format(table_identifier(table))
    ).fetchall()
    if len(rows) > 1:
        raise PlanningError(f"{table} has {len(rows)} rows; golang-migrate keeps exactly one")
    return (int(rows[0][0]), bool(rows[0][1])) if rows else None


@dataclass(frozen=True)
class FlywayRow:
    """One versioned migration's effective state in flyway_schema_history."""

    version: str
    description: str
    kind: str
    success: bool


def flyway_state(pg: psycopg.Connection[Any], table: str) -> list[FlywayRow]:
    """Return each version's latest row (by installed_rank); repeatables are left out."""
    rows = pg.execute(
        sql.SQL(
            "SELECT DISTINCT ON (version) version, description, type, success FROM {}"
            " WHERE version IS NOT NULL ORDER BY version, installed_rank DESC"
        ).format(table_identifier(table))
    ).fetchall()
    return [FlywayRow(str(v), str(d or ""), str(t), bool(s)) for v, d, t, s in rows]


def flyway_applied(pg: psycopg.Connection[Any], table: str) -> list[FlywayRow]:
    """Return the applied versions, newest first; refuse a failed migration."""
    state = flyway_state(pg, table)
    failed = [r.version for r in state if not r.success]
    if failed:
        raise PlanningError(
            f"{table} records failed migration(s) {', '.join(failed)}: run flyway repair (a "
            "person decides) before a rollback"
        )
    applied = [r for r in state if r.kind not in ("UNDO_SQL", "UNDO_JDBC", "DELETE")]
    return sorted(applied, key=lambda r: version_key(r.version), reverse=True)


def alembic_current(pg: psycopg.Connection[Any], table: str) -> list[str]:
    """Return the revisions in alembic_version (one per head)."""
    rows = pg.execute(
        sql.SQL("SELECT version_num FROM {}").format(table_identifier(table))
    ).fetchall()
    return [str(r[0]) for r in rows]


def alembic_chain(history: str) -> list[str]:
    """Order revisions head first from `alembic history` output; refuse branches."""
    parent: dict[str, str | None] = {}
    for line in history.splitlines():
        match = re.match(r"\s*(\S+) -> (\w+)", line)
        if match:
            down = match.group(1)
            parent[match.group(2)] = None if down == "<base>" else down.rstrip(",")
    children = {p for p in parent.values() if p}
    heads = [r for r in parent if r not in children]
    if len(heads) != 1:
        raise PlanningError(
            f"alembic history has {len(heads)} heads; only a linear one is rolled back"
        )
    chain, current = [], heads[0]
    while current:
        chain.append(current)
        current = parent.get(current) or ""
    return chain


# -- steps


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
    """golang-migrate: run <version>_*.down.sql; its one row becomes the previous version."""

    conn: DatabaseConnection
    table: str
    version: int
    previous: int | None
    script: Path
    timeout: float
    name = "database.golang_migrate_down"
    idempotent = True

    def describe(self) -> str:
        """Say which down file runs and what the row becomes."""
        after = "no row (nil version)" if self.previous is None else f"({self.previous}, false)"
        return (
            f"On {self.conn.dbname}: run {self.script} and set {self.table} to {after}, in one "
            f"transaction (golang-migrate down from {self.version})"
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
        """Check the row is this version and clean; run the down file; set the previous."""
        table = table_identifier(self.table)
        try:
            with connect(self.conn, timeout=ctx.remaining()) as pg, pg.transaction():
                state = golang_state(pg, self.table)
                if state == ((self.previous, False) if self.previous is not None else None):
                    return StepResult(
                        summary=f"Migration {self.version} is already rolled back", skipped=True
                    )
                if state != (self.version, False):
                    raise PermanentError(
                        f"{self.table} is at {state}, not ({self.version}, clean); nothing run"
                    )
                pg.execute(self.script.read_bytes())
                pg.execute(sql.SQL("TRUNCATE {}").format(table))
                if self.previous is not None:
                    pg.execute(
                        sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, false)").format(table),
                        (self.previous,),
                    )
        except psycopg.Error as error:
            raise _failed(self.conn, str(self.version), error) from error
        return StepResult(
            summary=f"Rolled back migration {self.version} with {self.script.name}",
            data={"version": self.version, "now": self.previous},
        )


@dataclass
class FlywayUndo:
    """Flyway: run U<version>__*.sql and record an UNDO_SQL row, as Flyway Teams does."""

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
            f"{self.version} to {self.table}, in one transaction"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"table": self.table, "version": self.version, "script": str(self.script)}

    def run(self, ctx: StepContext) -> StepResult:
        """Skip a version already undone; else undo it and record it."""
        started = time.monotonic()
        try:
            with connect(self.conn, timeout=ctx.remaining()) as pg, pg.transaction():
                state = {r.version: r for r in flyway_state(pg, self.table)}.get(self.version)
                if state is None or state.kind.startswith("UNDO"):
                    return StepResult(
                        summary=f"Migration {self.version} is already undone", skipped=True
                    )
                pg.execute(self.script.read_bytes())
                self._record(pg, state, int((time.monotonic() - started) * 1000))
        except psycopg.Error as error:
            raise _failed(self.conn, self.version, error) from error
        return StepResult(
            summary=f"Undid migration {self.version} with {self.script.name}",
            data={"version": self.version},
        )

    def _record(self, pg: psycopg.Connection[Any], state: FlywayRow, millis: int) -> None:
        table = table_identifier(self.table)
        pg.execute(
            sql.SQL(
                "INSERT INTO {} (installed_rank, version, description, type, script, checksum,"
                " installed_by, execution_time, success)"
                " SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, 'UNDO_SQL', %s, NULL,"
                " current_user, %s, true FROM {}"
            ).format(table, table),
            (self.version, state.description, self.script.name, millis),
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
    name = "database.alembic_downgrade"
    idempotent = True

    def describe(self) -> str:
        """Say which command runs where."""
        where = f" in {self.directory}" if self.directory else ""
        return (
            f"Run `{' '.join(self.command)} downgrade {self.revision}`{where} against "
            f"{self.conn.dbname} on {self.conn.host}:{self.conn.port} (PGHOST, PGPORT, PGUSER, "
            "PGDATABASE set); check alembic_version afterwards"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"table": self.table, "revision": self.revision}

    def run(self, ctx: StepContext) -> StepResult:
        """Skip when already at the revision; else downgrade and check where it ended."""
        with connect(self.conn, timeout=ctx.remaining()) as pg:
            if alembic_current(pg, self.table) == [self.revision]:
                return StepResult(summary=f"Already at revision {self.revision}", skipped=True)
        run = run_alembic(self, ["downgrade", self.revision], timeout=ctx.remaining())
        with connect(self.conn, timeout=ctx.remaining()) as pg:
            now = alembic_current(pg, self.table)
        if run.returncode != 0 or now != [self.revision]:
            raise PermanentError(
                f"alembic downgrade to {self.revision} failed (exit {run.returncode}); "
                f"{self.table} now holds {now or 'nothing'}:\n{run.tail()}"
            )
        return StepResult(
            summary=f"Downgraded {self.conn.dbname} to revision {self.revision}",
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
