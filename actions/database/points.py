"""A database's rollback points, and the default one: just before the change.

- Each allowed method lists its points, newest first: the dumps in the backups directory,
  the point-in-time window, the migrations that can be rolled back.
- The default point in time is just before the change being rolled back, never the window's
  end (recovering to the last archived commit undoes nothing and loses what is not archived
  yet): the later of "just before the newest migration was applied" (`newest_migration`)
  and the last known healthy time the bot passes in (`healthy_at`), inside the window; the
  point's label says which. When neither is known there is no default: a person chooses.
  Likewise a dump taken after that time is never the default while an older one exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from actions.base import PlanningError, RollbackPoint
from actions.database.migration_plans import MigrationPlanner
from actions.database.migrations import TOOL_NAMES, Detected, detect, table_identifier
from actions.database.names import first_line, iso, pitr_ref
from actions.database.pgtools import connect
from actions.database.selfhosted import Backup

if TYPE_CHECKING:
    from actions.database.target import DatabaseTarget


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


def rollback_points(target: DatabaseTarget) -> list[RollbackPoint]:
    """List the rollback points of every allowed method, each group newest first."""
    listers = {
        "backup": _backup_points,
        "pitr": _pitr_points,
        "migration": _migration_points,
    }
    return [point for method in target.params.methods for point in listers[method](target)]


def _backup_points(target: DatabaseTarget) -> list[RollbackPoint]:
    """Every dump, newest first. Never the default: the bot's own pre-rollback dumps, and
    dumps taken after the change (the newest migration, or the last known healthy time)
    when a dump from before it exists: restoring them keeps the change."""
    now, backups = target.now(), target.backups()
    good = _before_change(target, backups)
    own = "the bot's own pre-rollback backup: the state a rollback moved away from"
    return [
        RollbackPoint(
            f"backup:{b.path}",
            b.label(now),
            b.taken_at,
            avoid=own
            if b.pre_rollback
            else f"taken {good.later}: it has the change in it"
            if good is not None and b.taken_at > good.moment
            else "",
        )
        for b in backups
    ]


def _before_change(target: DatabaseTarget, backups: list[Backup]) -> KnownGood | None:
    """The latest known-good time, when some regular dump was taken before it."""
    found, _ = _known_goods(target)
    good = max(found, key=lambda g: g.moment, default=None)
    regular = [b for b in backups if not b.pre_rollback]
    if good is None or not any(b.taken_at <= good.moment for b in regular):
        return None
    return good


def _pitr_points(target: DatabaseTarget) -> list[RollbackPoint]:
    """The time just before the change (the default), then the rest of the window.

    The window's end is offered but never the default: recovering to the last archived
    commit undoes nothing and loses the writes not archived yet.
    """
    window = target.pitr_window()
    if window is None:
        return []
    earliest, latest = window
    span = f"point in time ({target.pitr_source}): any time from {iso(earliest)} to {iso(latest)}"
    good, unknown = _known_good(target, window)
    avoid = (
        "the last archived commit: recovering there undoes nothing and loses the writes "
        "not archived yet; choose the time just before the change"
    )
    if good is None:
        avoid += f" ({unknown})"
    last = RollbackPoint(pitr_ref(latest), span, latest, avoid=avoid)
    if good is None:
        return [last]
    return [RollbackPoint(pitr_ref(good.moment), f"{good.label} · {span}", good.moment), last]


def _known_good(
    target: DatabaseTarget, window: tuple[datetime, datetime]
) -> tuple[KnownGood | None, str]:
    """The latest time the database is known to have been good at inside the window,
    else None and why none is known."""
    found, why = _known_goods(target)
    inside = [g for g in found if window[0] <= g.moment <= window[1]]
    if not inside:
        outside = ", ".join(g.label for g in found)
        return None, (f"{outside}: outside the window" if found else why)
    return max(inside, key=lambda g: g.moment), ""


def _known_goods(target: DatabaseTarget) -> tuple[list[KnownGood], str]:
    """Just before the newest migration, and the last known healthy time the bot passed
    in; with why the first is missing."""
    found: list[KnownGood] = []
    why = "no migration table records when it was applied"
    try:
        # best effort, read each time the points are listed: a short connect timeout
        with connect(target.params.connection, timeout=3.0) as pg:
            migration = newest_migration(pg, detect(pg, target.params.migrations_table))
        if migration is not None:
            found.append(migration)
    except (PlanningError, psycopg.Error) as error:
        why = f"the migration table could not be read: {first_line(error)}"
    if target.healthy_at is not None:
        at = target.healthy_at.astimezone(UTC)
        said = f"{at:%Y-%m-%d %H:%M:%S} UTC"
        found.append(
            KnownGood(at, f"last known healthy at {said}", f"after the last healthy {said}")
        )
    return found, why


def _migration_points(target: DatabaseTarget) -> list[RollbackPoint]:
    planner = MigrationPlanner(target.params)
    found = planner.detect()
    tool = TOOL_NAMES[found.tool].split(" (")[0]
    return [
        RollbackPoint(f"migration:{v}", f"{tool} migration {v} · current", is_current=True)
        if i == 0
        else RollbackPoint(
            f"migration:{v}", f"{tool} migration {v} · rolls back {n} newer migration(s)"
        )
        for i, (v, n) in enumerate(planner.points(found))
    ]


def default_ref(target: DatabaseTarget) -> str:
    """Return the default point of the first allowed method."""
    method = target.params.methods[0]
    if method == "backup":
        backups = target.backups()
        good = _before_change(target, backups)
        regular = [
            b for b in backups if not b.pre_rollback and (good is None or b.taken_at <= good.moment)
        ]
        if regular or backups:
            return f"backup:{(regular or backups)[0].path}"
    elif method == "pitr":
        window = target.pitr_window()
        if window:
            good, unknown = _known_good(target, window)
            if good is not None:
                return pitr_ref(good.moment)
            raise PlanningError(
                f"no default point in time for {target.dbname}: {unknown}, and no last known "
                "healthy time was given; choose the time just before the change (the last "
                "archived commit would undo nothing)"
            )
    else:
        versions = target.applied_migrations()
        if len(versions) > 1:
            return f"migration:{versions[1]}"
    raise PlanningError(f"no {method} rollback point for {target.dbname}")
