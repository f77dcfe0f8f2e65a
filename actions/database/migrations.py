"""Migration rollback with the migration tool the database actually uses: detect it, read it.

- The tool is detected from its bookkeeping table, never assumed: Flyway
  (`flyway_schema_history`, or any table with its columns: `schema_version` before Flyway 5,
  a custom `flyway.table`), Alembic (`alembic_version`), Supabase CLI
  (`supabase_migrations.schema_migrations`), golang-migrate (a one-row `schema_migrations`
  with `version bigint` and `dirty boolean`) or the procedures' own format (a
  `schema_migrations` with a text `version` per applied migration). Anything else is refused
  naming the tables that were found; Prisma (`_prisma_migrations`) has no down migrations.
- Each tool's bookkeeping is read the way that tool keeps it: Flyway's migrations in
  effect come from flyway_schema_history in installed_rank order, undo rows cancelling
  what they undid, and are undone in reverse installed_rank, so an out-of-order migration
  is undone where it was applied; versions compare as MigrationVersion does
  (1.9 < 1.10 < 1.11); repeatables (`R__`) are never undone; a failed row is refused
  (Flyway wants `repair` first). Alembic's revision graph (branches, merges, several
  heads) comes from `<command> history` (alembic_graph). The steps that undo migrations,
  writing each tool's bookkeeping as it does, are in migration_steps.py.
- What cannot be made safe is refused at plan time, before anything runs: a missing down
  script (there is no `force` that would only delete bookkeeping rows and leave the schema
  changes in place), a statement that cannot run where the tool would run it. What runs
  without a transaction is said before approval, as a risk.
- Scripts come from the configured migrations directory, never from Slack; table names are
  quoted with psycopg.sql.Identifier.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from actions.base import PlanningError

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
