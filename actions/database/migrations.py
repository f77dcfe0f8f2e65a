"""Migration rollback with the migration tool the database actually uses.

- The tool is detected from its bookkeeping table, never assumed: Flyway
  (`flyway_schema_history`, or any table with its columns: `schema_version` before Flyway 5,
  a custom `flyway.table`), Alembic (`alembic_version`), Supabase CLI
  (`supabase_migrations.schema_migrations`), golang-migrate (a one-row `schema_migrations`
  with `version bigint` and `dirty boolean`) or the procedures' own format (a
  `schema_migrations` with a text `version` per applied migration). Anything else is refused
  naming the tables that were found; Prisma (`_prisma_migrations`) has no down migrations.
- Each tool's bookkeeping is kept the way that tool keeps it:
  - procedures / Supabase CLI: run `rollback_<version>.sql` and delete the version's row in
    one transaction, so a failed script leaves the database at its version;
  - golang-migrate, as `migrate down` runs (migrate.go runMigrations; database/postgres/
    postgres.go Run, SetVersion, Lock): under its advisory lock, the one row becomes
    (previous, dirty), `<version>_<name>.down.sql` goes to PostgreSQL as one batch with no
    transaction of the bot's (several statements are one implicit transaction, a lone
    `DROP INDEX CONCURRENTLY` runs as written), then the row becomes (previous, clean), or
    no row below the first. A failure leaves the row dirty, as golang-migrate leaves it; a
    dirty row is refused (`migrate force` is a person's call);
  - Flyway: the migrations in effect are read from flyway_schema_history in installed_rank
    order, undo rows cancelling what they undid, and undone in reverse installed_rank, so an
    out-of-order migration is undone where it was applied; versions compare as
    MigrationVersion does (1.9 < 1.10 < 1.11); repeatables (`R__`) are never undone; a failed
    row is refused (Flyway wants `repair` first). Undo runs `U<version>__<description>.sql`
    in one transaction with its UNDO_SQL row (checksum, description and script as Flyway
    computes them), or statement by statement when it only holds statements PostgreSQL
    refuses in a transaction, as Flyway runs those;
  - Alembic: revisions are Python, so the configured command runs
    `<command> downgrade <revision>`; the revision graph (branches, merges, several heads)
    comes from `<command> history` (alembic_graph).
- What cannot be made safe is refused at plan time, before anything runs: a missing down
  script (there is no `force` that would only delete bookkeeping rows and leave the schema
  changes in place), a statement that cannot run where the tool would run it. What runs
  without a transaction is said before approval, as a risk.
- Scripts come from the configured migrations directory, never from Slack; table names are
  quoted with psycopg.sql.Identifier.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from actions.base import PermanentError, PlanningError, StepContext, StepResult, TemporaryError
from actions.database.names import first_line
from actions.database.params import DatabaseConnection
from actions.database.pgtools import ToolRun, connect, run_tool
from actions.database.sqltext import outside_transaction, split

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


FLYWAY_COLUMNS = {"installed_rank", "version", "description", "type", "script", "success"}
"""Flyway's history table by its columns: its name is `flyway.table` (documentation/Reference/
Configuration/Flyway Namespace/Flyway Table Setting.md), `schema_version` before Flyway 5."""


def detect(pg: psycopg.Connection[Any], configured: str) -> Detected:
    """Tell the migration tool from the tables present; refuse anything unknown.

    Flyway's table is told by its columns, whatever it is called; Alembic's by its name, or
    by its one `version_num` column where `migrations_table` names it (env.py's
    `version_table`)."""
    tables = _tables(pg, configured)
    found = [
        d for schema, name in tables if (d := _tool_of(pg, schema, name, configured)) is not None
    ]
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


def _tool_of(
    pg: psycopg.Connection[Any], schema: str, name: str, configured: str
) -> Detected | None:
    """The tool whose history table `schema.name` is, if any."""
    qualified = name if schema == "public" else f"{schema}.{name}"
    if name == "alembic_version":
        return Detected("alembic", qualified)
    if (schema, name) == ("supabase_migrations", "schema_migrations"):
        return Detected("supabase", qualified)
    columns = _columns(pg, schema, name)
    if columns.keys() >= FLYWAY_COLUMNS:
        return Detected("flyway", qualified)
    if qualified == configured and set(columns) == {"version_num"}:
        return Detected("alembic", qualified)
    if qualified != configured and name != "schema_migrations":
        return None
    if columns.get("dirty") == "boolean" and columns.get("version") == "bigint":
        return Detected("golang-migrate", qualified)
    if "version" in columns and "dirty" not in columns:
        return Detected("procedures", qualified)
    return None


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


GOLANG_NIL = -1
"""golang-migrate's NilVersion: no migration applied (database/driver.go)."""
GOLANG_LOCK_SALT = 1486364155


def golang_lock_id(dbname: str, table: str) -> int:
    """The advisory lock golang-migrate's postgres driver takes around a run.

    database/util.go GenerateAdvisoryLockId: crc32 (IEEE) of the database name, then each
    further name after a NUL byte (postgres.go Lock passes the schema and the table), times
    the salt, as a uint32.
    """
    schema, _, name = table.rpartition(".")
    text = "\0".join([dbname, schema or "public", name])
    return (zlib.crc32(text.encode()) * GOLANG_LOCK_SALT) & 0xFFFFFFFF


def golang_set_version(
    pg: psycopg.Connection[Any], table: str, version: int, *, dirty: bool
) -> None:
    """Write the one row as golang-migrate's postgres.go SetVersion does, in one transaction:
    TRUNCATE, then INSERT unless it is the clean nil version (a dirty nil row is kept)."""
    ident = table_identifier(table)
    with pg.transaction():
        pg.execute(sql.SQL("TRUNCATE {}").format(ident))
        if version >= 0 or dirty:
            pg.execute(
                sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(ident),
                (version, dirty),
            )


@dataclass(frozen=True)
class FlywayRow:
    """One row of flyway_schema_history."""

    rank: int
    version: str | None
    description: str
    kind: str
    script: str
    success: bool


def flyway_history(pg: psycopg.Connection[Any], table: str) -> list[FlywayRow]:
    """Every row, in installed_rank order (the order Flyway applied them)."""
    rows = pg.execute(
        sql.SQL(
            "SELECT installed_rank, version, description, type, script, success FROM {}"
            " ORDER BY installed_rank"
        ).format(table_identifier(table))
    ).fetchall()
    return [
        FlywayRow(int(r), None if v is None else str(v), str(d or ""), str(t), str(s), bool(ok))
        for r, v, d, t, s, ok in rows
    ]


def flyway_applied(history: list[FlywayRow], table: str) -> list[FlywayRow]:
    """The versioned migrations in effect, last applied first; refuse a failed row.

    Follows flyway-core's MigrationInfoServiceImpl: rows are read in installed_rank order; a
    successful undo row marks the latest earlier row of its version undone (markAsUndone in
    the Teams build, which calls a second undo of the same row a corrupted history), a
    repair's DELETE row marks it deleted (getAppliedVersionedMigrations, markAsDeleted);
    schema markers and repeatables (no version) are not versions. Undo goes "in the reverse
    of their applied order" (flyway/flyway documentation/Reference/Commands/Undo.md), not in
    version order, so an out-of-order migration is undone where it was applied.
    """
    failed = [r.version or r.script for r in history if not r.success]
    if failed:
        raise PlanningError(
            f"{table} records failed migration(s) {', '.join(failed)}: run flyway repair (a "
            "person decides) before a rollback"
        )
    live: list[FlywayRow] = []
    for row in history:
        if row.version is None or row.kind == "SCHEMA":
            continue
        if row.kind.startswith("UNDO") or row.kind == "DELETE":
            undone = next((r for r in reversed(live) if r.version == row.version), None)
            if undone is None and row.kind == "DELETE":
                continue
            if undone is None:
                raise PlanningError(
                    f"{table} is corrupted: {row.kind} row {row.rank} for version {row.version} "
                    "follows no applied row of that version"
                )
            live.remove(undone)
            continue
        live.append(row)
    return list(reversed(live))


FLYWAY_LOCK_MAGIC = (0x46 << 40) + (0x6C << 32) + (0x79 << 24) + (0x77 << 16) + (0x61 << 8) + 0x79


def java_hash(text: str) -> int:
    """Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, as an int."""
    data = text.encode("utf-16-be")
    value = 0
    for i in range(0, len(data), 2):
        value = (31 * value + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def flyway_lock_id(table: str) -> int:
    """The advisory lock Flyway takes on PostgreSQL while it migrates or undoes.

    flyway-database-postgresql PostgreSQLConnection.lock: PostgreSQLAdvisoryLockTemplate with
    the discriminator `table.toString().hashCode()`, the table written `"schema"."table"`
    (Table.toString: database.quote(schema, name)); the lock number is LOCK_MAGIC_NUM ("Flyway"
    in ASCII) plus it. Transactional or not, it is the same advisory key.
    """
    schema, _, name = table.rpartition(".")
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema or "public", name))
    return FLYWAY_LOCK_MAGIC + java_hash(quoted)


def flyway_checksum(text: str) -> int:
    """Flyway's checksum of a SQL migration: CRC32 over its lines without line breaks, UTF-8,
    a leading BOM dropped, as a signed int (flyway-core resolver/ChecksumCalculator.java,
    calculateChecksumForResource; BufferedReader.readLine splits at \\n, \\r and \\r\\n)."""
    lines = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))
    if lines and lines[-1] == "" and len(lines) > 1:
        lines.pop()
    crc = 0
    for line in lines if text else []:
        crc = zlib.crc32(line.encode(), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def flyway_description(script: Path) -> str:
    """The description Flyway derives from a file name: `U1_10__add_b.sql` -> `add b`
    (MigrationInfoHelper.extractVersionAndDescription replaces underscores by spaces)."""
    return script.stem.split("__", 1)[1].replace("_", " ") if "__" in script.stem else ""


def alembic_current(pg: psycopg.Connection[Any], table: str) -> list[str]:
    """Return the revisions in alembic_version (one per head in use)."""
    rows = pg.execute(
        sql.SQL("SELECT version_num FROM {}").format(table_identifier(table))
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


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
