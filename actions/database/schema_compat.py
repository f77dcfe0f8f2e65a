"""Will the old code run on today's schema? And what does a database rollback lose?

Schema compatibility of an application rollback. The migrations applied since
the version rolled back to was deployed are listed from the migration tool's
own table: Flyway's `installed_on`, or a timestamp column of the procedures' /
Supabase `schema_migrations` (`applied_at`, `inserted_at`, …). Where the tool
keeps no time (golang-migrate's one row, Alembic), the app target maps its
image's version to the migration it shipped with (`schema_versions`), and the
migrations newer than that one are listed. Each migration's forward SQL is
classified statement by statement:

- additive, old code keeps working: CREATE TABLE / INDEX / VIEW / SEQUENCE,
  ADD COLUMN that is nullable or has a DEFAULT, DROP INDEX, data changes;
- breaking, the old image will likely fail: DROP TABLE / COLUMN / VIEW, RENAME,
  a type change, ADD COLUMN NOT NULL without DEFAULT, SET NOT NULL, a new
  constraint (old code may write rows that break it);
- anything else is unclassified and counted as breaking: better a verdict that
  asks a person than one that guesses.

Whether each migration has a down script (the tool's own file name) decides
whether a full rollback (database, then app) is possible.

Data-loss window of a database rollback: writes after the restore point are
not in the restored database. PostgreSQL counts inserted, updated and deleted
rows per table in `pg_stat_user_tables` since the statistics were last reset
(`pg_stat_database.stats_reset`, else the server's start); the estimate is the
average rate since then times the window, or every counted change when the
window starts before the counting did ("at least").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions.base import PlanningError
from actions.database.migration_plans import MigrationPlanner
from actions.database.migrations import Detected, table_identifier, version_key
from actions.database.params import DatabaseConnection, DatabaseParams
from actions.database.pgtools import connect, planning_errors
from actions.database.sqltext import statements

BREAKING = [
    (
        re.compile(r"^DROP\s+(TABLE|VIEW|MATERIALIZED\s+VIEW|SCHEMA|TYPE|SEQUENCE|FUNCTION)\b"),
        "drops",
    ),
    (
        re.compile(
            r"^ALTER\s+TABLE\b.*\bDROP\s+(COLUMN\s+)?(IF\s+EXISTS\s+)?"
            r"(?!CONSTRAINT\b|DEFAULT\b|NOT\s+NULL\b|INDEX\b|IDENTITY\b)\w+"
        ),
        "drops a column",
    ),
    (re.compile(r"^ALTER\b.*\bRENAME\b"), "renames"),
    (re.compile(r"\bALTER\s+(COLUMN\s+)?\w+\s+(SET\s+DATA\s+)?TYPE\b"), "changes a type"),
    (re.compile(r"\bSET\s+NOT\s+NULL\b"), "adds NOT NULL"),
    (
        re.compile(r"\bADD\s+(CONSTRAINT|PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY|EXCLUDE)\b"),
        "adds a constraint",
    ),
]
ADDITIVE = re.compile(
    r"^(CREATE\b|DROP\s+INDEX|INSERT|UPDATE|DELETE|COMMENT|GRANT|BEGIN|COMMIT|SET\b|SELECT)"
)
ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\b.*\bADD\s+(COLUMN\s+)?(IF\s+NOT\s+EXISTS\s+)?\w+")
RELAXING = re.compile(r"^ALTER\s+TABLE\b.*\b(DROP\s+NOT\s+NULL|DROP\s+CONSTRAINT|SET\s+DEFAULT)\b")


def _breaks(statement: str) -> str | None:
    """Say how a statement breaks old code, or None when it does not."""
    if ADDITIVE.match(statement):
        return None
    for pattern, words in BREAKING:
        if pattern.search(statement):
            return words
    if ADD_COLUMN.match(statement):
        if "NOT NULL" in statement and "DEFAULT" not in statement:
            return "adds a NOT NULL column without a default"
        return None
    if RELAXING.match(statement):
        return None
    return "unclassified"


@dataclass(frozen=True)
class Change:
    """A migration's forward SQL, classified."""

    breaking: tuple[str, ...]
    """One entry per statement that breaks old code: `drops: ALTER TABLE …`."""

    @property
    def additive(self) -> bool:
        """Whether old code keeps working on the migrated schema."""
        return not self.breaking


def classify(script: str) -> Change:
    """Classify every statement of a forward migration."""
    found = []
    for statement in statements(script):
        how = _breaks(statement)
        if how is not None:
            found.append(f"{how}: {statement[:120]}")
    return Change(tuple(found))


@dataclass(frozen=True)
class Migration:
    """One applied migration as the verdict weighs it."""

    version: str
    applied_at: datetime | None
    change: Change | None
    """None when its forward script is not in the migrations directory."""
    down: Path | None


@dataclass
class Migrations:
    """One database's migrations read once: the tool, the applied versions and their times."""

    params: DatabaseParams
    planner: MigrationPlanner = field(init=False)
    found: Detected = field(init=False)

    def __post_init__(self) -> None:
        self.planner = MigrationPlanner(self.params)
        self.found = self.planner.detect()

    def times(self) -> dict[str, datetime] | None:
        """Each applied version's time, or None when the tool keeps none."""
        with (
            planning_errors(f"reading {self.found.table}"),
            connect(self.params.connection) as pg,
        ):
            if self.found.tool == "flyway":
                query = sql.SQL(
                    "SELECT version, max(installed_on) FROM {} WHERE version IS NOT NULL"
                    " AND type NOT LIKE 'UNDO%' GROUP BY version"
                ).format(table_identifier(self.found.table))
                rows = pg.execute(query).fetchall()
            elif self.found.tool in ("procedures", "supabase"):
                column = _time_column(pg, self.found.table)
                if column is None:
                    return None
                query = sql.SQL("SELECT version::text, {} FROM {}").format(
                    sql.Identifier(column), table_identifier(self.found.table)
                )
                rows = pg.execute(query).fetchall()
            else:
                return None
        return {str(v): _utc(t) for v, t in rows if t is not None}

    def since(self, moment: datetime) -> list[Migration]:
        """The migrations applied after `moment`, oldest first; PlanningError if untimed."""
        times = self.times()
        if times is None:
            raise PlanningError(
                f"{self.found.label} keeps no time per migration: map image versions to "
                "migrations with schema_from.versions on the app target"
            )
        # in the order they were applied (Flyway's out-of-order migrations are not in version
        # order), the version breaking a tie
        applied = set(self.planner.applied(self.found))
        newer = sorted(
            (v for v, t in times.items() if t > moment and v in applied),
            key=lambda v: (times[v], version_key(v)),
        )
        return [self._migration(v, times.get(v)) for v in newer]

    def after(self, version: str) -> list[Migration]:
        """The applied migrations newer than `version`, oldest first."""
        applied = self.planner.applied(self.found)
        if version not in applied:
            raise PlanningError(
                f"migration {version} is not applied to {self.params.connection.dbname}"
            )
        newer = list(reversed(applied[: applied.index(version)]))
        times = self.times() or {}
        return [self._migration(v, times.get(v)) for v in newer]

    def _migration(self, version: str, applied_at: datetime | None) -> Migration:
        up = forward_script(self.found, self._directory(), version)
        down = self.planner.script(self.found, version) if self._directory() else None
        change = classify(up.read_text()) if up is not None else None
        return Migration(version, applied_at, change, down)

    def _directory(self) -> Path | None:
        return Path(self.params.migrations) if self.params.migrations else None


def _time_column(pg: psycopg.Connection[Any], table: str) -> str | None:
    schema, _, name = table.rpartition(".")
    rows = pg.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = %s AND data_type LIKE 'timestamp%%' ORDER BY ordinal_position",
        (schema or "public", name),
    ).fetchall()
    return str(rows[0][0]) if rows else None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def forward_script(found: Detected, directory: Path | None, version: str) -> Path | None:
    """The tool's forward file for `version`: `<v>_*.sql`, `<v>_*.up.sql`, `V<v>__*.sql`."""
    if directory is None or not directory.is_dir():
        return None
    for path in sorted(directory.iterdir()):
        name = path.name
        if found.tool == "golang-migrate":
            match = re.fullmatch(r"(\d+)_.*\.up\.sql", name)
            if match and int(match.group(1)) == int(version):
                return path
        elif found.tool == "flyway":
            match = re.fullmatch(r"V([0-9._]+)__.*\.sql", name)
            if match and version_key(match.group(1).replace("_", ".")) == version_key(version):
                return path
        elif not name.startswith("rollback_") and re.fullmatch(
            rf"{re.escape(version)}(_.*)?\.sql", name
        ):
            return path
    return None


# -- data loss -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteEstimate:
    """Row changes expected to be lost, and how the estimate was made."""

    rows: int
    at_least: bool
    counted_since: datetime
    busiest: tuple[tuple[str, int], ...]

    def words(self) -> str:
        """`about 1,200 row changes (…)` for people."""
        lead = "at least" if self.at_least else "about"
        how = (
            "every change PostgreSQL counted"
            if self.at_least
            else "the average write rate PostgreSQL counted"
        )
        tables = ", ".join(f"{t} {n:,}" for t, n in self.busiest)
        top = f"; busiest: {tables}" if tables else ""
        return (
            f"{lead} {self.rows:,} row changes ({how} since "
            f"{self.counted_since.strftime('%Y-%m-%d %H:%M UTC')}{top})"
        )


def write_estimate(
    conn: DatabaseConnection, since: datetime, *, now: datetime
) -> WriteEstimate | None:
    """Estimate the row changes after `since` from pg_stat_user_tables; None without counters."""
    with connect(conn) as pg:
        started = pg.execute(
            "SELECT coalesce(stats_reset, pg_postmaster_start_time()) FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        rows = pg.execute(
            "SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del"
            " FROM pg_stat_user_tables ORDER BY 2 DESC, 1"
        ).fetchall()
    if not started or started[0] is None:
        return None
    counted_since = _utc(started[0])
    total = sum(int(n) for _, n in rows)
    counted = max((now - counted_since).total_seconds(), 1.0)
    window = max((now - since).total_seconds(), 0.0)
    at_least = since <= counted_since
    share = 1.0 if at_least else min(1.0, window / counted)
    busiest = tuple((str(t), round(int(n) * share)) for t, n in rows[:3] if int(n))
    return WriteEstimate(round(total * share), at_least, counted_since, busiest)
