"""The reversibility verdict's evidence for a database: readable, fresh, and what it loses.

- The pre-rollback checks, weighed: a backup that does not read back whole, a
  time outside the restorable window, a missing down script or a recovery name
  taken by someone else blocks.
- The data-loss window: writes after the restore point (the dump's time, the
  point in time) until the rollback are not in the restored database; the rows
  are estimated from PostgreSQL's own counters (schema_compat.write_estimate).
  A migration rollback loses what its down scripts drop.
- What a swap cannot carry (`_left_with_the_old_database`): a logical replication slot
  and a subscription belong to the database by oid, so they stay with the database kept
  aside; an unlogged table is not in WAL, so point-in-time recovery brings it back empty.
- Freshness: with a recovery-point objective (`rpo: 1h`), the newest usable
  backup (or the WAL archive's end) older than it makes the rollback risky:
  the restore point people can reach is further back than promised.

A finding's `basis` (what the plan hash covers) leaves out the row estimate and
ages, which move by themselves; the restore point and "within / over the
objective" are facts, and an approval does not survive their change.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from actions.base import ActionError, Check, Finding, Level
from actions.database.migration_plans import MigrationPlanner
from actions.database.names import exact, first_line, human_duration, iso, parse_ref, parse_time
from actions.database.params import DatabaseConnection
from actions.database.pgtools import connect, inspect_archive
from actions.database.schema_compat import classify, write_estimate

if TYPE_CHECKING:
    from actions.database.target import DatabaseTarget

INFORMATIVE = frozenset({"estimated duration", "data-loss window"})
NEWEST_TRIED = 3
"""Backups read, newest first, to find the newest usable one for freshness."""


def _weigh(check: Check) -> Finding | None:
    if check.name in INFORMATIVE:
        return None
    if check.ok:
        return Finding(Level.OK, f"{check.name}: {check.detail}", check.name)
    return Finding(Level.BLOCKED, f"{check.name} fails: {check.detail}", check.name)


def database_evidence(target: DatabaseTarget, ref: str | None) -> list[Finding]:
    """Weigh the checks, then say what the rollback loses and how fresh its source is."""
    checks = target.checks(ref)
    findings = [f for f in (_weigh(c) for c in checks) if f is not None]
    if any(f.level == Level.BLOCKED for f in findings):
        return findings
    try:
        method, value = parse_ref(ref or target.default_ref())
        if method == "migration":
            findings += _migration_loss(target, value)
        else:
            since = _restore_point(target, method, value)
            if since is not None:
                replayed = method == "pitr" and target.pitr_source is not None
                findings.append(_loss(target, since, replayed=replayed))
        findings += _freshness(target)
        if method != "migration" and target.params.rds is None:
            findings += _left_with_the_old_database(target, replayed=method == "pitr")
    except ActionError as exc:
        findings.append(Finding(Level.RISKY, f"data loss not assessed: {exc}", "loss unknown"))
    return findings


def _restore_point(target: DatabaseTarget, method: str, value: str) -> datetime | None:
    if method == "pitr":
        moment = parse_time(value)
        if target.pitr_source is not None:
            return moment
        earlier = [b for b in target.backups() if b.taken_at <= moment and not b.pre_rollback]
        return earlier[0].taken_at if earlier else None
    path = value
    return next((b.taken_at for b in target.backups() if str(b.path) == path), None)


def _loss(target: DatabaseTarget, since: datetime, *, replayed: bool = False) -> Finding:
    """The writes the restored database will not have; exact to the microsecond when WAL is
    replayed to a time (committed at that instant: kept when recovery_target_inclusive)."""
    edge = "after"
    moment = iso(since)
    if replayed:
        edge = "after" if target.params.recovery_target_inclusive else "at or after"
        moment = exact(since)
    window = f"writes committed {edge} {moment} until the rollback are lost"
    try:
        estimate = write_estimate(target.params.connection, since, now=target.now())
    except (psycopg.Error, ActionError, OSError):
        estimate = None
    words = f"{window}: {estimate.words()}" if estimate is not None else window
    return Finding(Level.LOSS, words, f"writes {edge} {moment} lost")


def _migration_loss(target: DatabaseTarget, version: str) -> list[Finding]:
    rollback = MigrationPlanner(target.params).rollback(version)
    findings = [Finding(Level.RISKY, risk) for risk in rollback.risks]
    for step in rollback.steps:
        script = getattr(step, "script", None)
        if script is None:
            findings.append(Finding(Level.RISKY, f"{step.describe()}: what it drops is not known"))
            continue
        drops = [b for b in classify(script.read_text()).breaking if b.startswith("drops")]
        if drops:
            findings.append(
                Finding(
                    Level.LOSS,
                    f"{script.name} loses data: {'; '.join(drops)}",
                    f"{script.name} drops",
                )
            )
        else:
            findings.append(Finding(Level.OK, f"{script.name} drops nothing", script.name))
    return findings


def _freshness(target: DatabaseTarget) -> list[Finding]:
    rpo = target.params.rpo
    if rpo is None:
        return []
    newest, what = _newest_usable(target)
    objective = human_duration(rpo.total_seconds())
    if newest is None:
        return [Finding(Level.RISKY, f"no usable backup at all (objective {objective})", "none")]
    age = target.now() - newest
    words = f"newest usable {what} is from {iso(newest)}, {human_duration(age.total_seconds())} old"
    if age > rpo:
        return [
            Finding(
                Level.RISKY,
                f"stale: {words}, older than the recovery-point objective of {objective}",
                f"{what} {iso(newest)} over objective {objective}",
            )
        ]
    return [
        Finding(
            Level.OK,
            f"fresh: {words}, within the objective of {objective}",
            f"{what} {iso(newest)} within objective {objective}",
        )
    ]


def _newest_usable(target: DatabaseTarget) -> tuple[datetime | None, str]:
    if target.pitr_source is not None:
        window = target.pitr_window()
        return (window[1] if window else None), f"point in time ({target.pitr_source})"
    regular = [b for b in target.backups() if not b.pre_rollback]
    for backup in regular[:NEWEST_TRIED]:
        if inspect_archive(backup.path).readable:
            return backup.taken_at, "backup"
    return None, "backup"


Rows = list[tuple[Any, ...]]


def _read_hazards(conn: DatabaseConnection) -> tuple[Rows, Rows, Rows]:
    """Read the live database's logical slots, subscriptions and unlogged tables."""
    with connect(conn) as pg:
        slots = pg.execute(
            "SELECT slot_name, plugin, active FROM pg_replication_slots"
            " WHERE slot_type = 'logical' AND database = current_database() ORDER BY 1"
        ).fetchall()
        subscriptions = pg.execute(
            "SELECT subname, subenabled FROM pg_subscription"
            " WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY 1"
        ).fetchall()
        unlogged = pg.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p') ORDER BY 1"
        ).fetchall()
    return slots, subscriptions, unlogged


def _left_with_the_old_database(target: DatabaseTarget, *, replayed: bool) -> list[Finding]:
    """Say, before approval, what stays with the database kept aside or comes back empty."""
    conn = target.params.connection
    try:
        slots, subscriptions, unlogged = _read_hazards(conn)
    except psycopg.Error as error:
        return [
            Finding(
                Level.RISKY,
                f"replication slots, subscriptions and unlogged tables of {conn.dbname} not "
                f"read: {first_line(error)}",
                "swap hazards unknown",
            )
        ]
    aside = f"{conn.dbname}_pre_rollback_<time>"
    findings = [
        Finding(
            Level.RISKY,
            f"logical replication slot {name} ({plugin}, {'active' if active else 'inactive'}) "
            f"belongs to {conn.dbname} by oid: after the swap it reads {aside}, so its "
            "subscribers and change-data-capture keep receiving the old database's changes "
            "until the slot is made again on the restored one",
            f"logical slot {name}",
        )
        for name, plugin, active in slots
    ]
    # pg_dump restores a subscription disabled ("connect = false", its reference page, Notes)
    findings += [
        Finding(
            Level.RISKY,
            f"subscription {name} ({'enabled' if enabled else 'disabled'}) stays with "
            f"{aside}, which keeps applying the publisher's changes; the restored database's "
            "copy is created disabled and must be enabled (and its slot seen to) by a person",
            f"subscription {name}",
        )
        for name, enabled in subscriptions
    ]
    if unlogged and replayed and target.pitr_source is not None:
        names = ", ".join(row[0] for row in unlogged)
        findings.append(
            Finding(
                Level.LOSS,
                f"unlogged table(s) {names}: not written to WAL, so point-in-time recovery "
                "brings them back empty",
                f"unlogged {names} empty",
            )
        )
    return findings
