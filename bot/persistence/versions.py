"""The regression guard's rows: the marks on a target's versions, their clearing, the history.

`target_versions` (migrations 0007, 0012) keeps the last thing the bot learnt about each
version of each target; the store writes it with a run's end. Here are the reads the guard
answers from, the one write people make on it (an approver clears a version rolled away
from: who, when, why, with an audit event on the incident that marked it, in one
transaction), and the runs that ended an incident by moving their target to a version,
which the verdict weighs (`bot.execution.fixes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.domain.states import RunKind, VersionState
from bot.domain.versions import Ending, KnownVersions, VersionMark, VersionNote, version_key
from bot.persistence.database import Conflict, Repository
from bot.persistence.models import Event, Run, TargetVersion

CLEARED = "version.cleared"
"""Audit event on the incident that marked a version bad: an approver cleared it."""
ENDINGS = 200
"""How many of a target's succeeded rollbacks the verdict weighs, newest first."""


def _mark(row: TargetVersion) -> VersionMark:
    return VersionMark(
        environment=row.environment,
        target=row.target,
        version=row.version,
        label=row.label,
        healthy=row.state == VersionState.HEALTHY,
        incident_id=row.incident_id,
        at=row.at,
        cleared_by=row.cleared_by,
        cleared_at=row.cleared_at,
        cleared_reason=row.cleared_reason,
    )


def _marked_bad(row: TargetVersion) -> bool:
    """A version rolled away from that no approver has cleared (migration 0012)."""
    return row.state == VersionState.ROLLED_AWAY and row.cleared_at is None


def remember(session: Session, note: VersionNote, *, at: datetime) -> None:
    """Record in `session`'s transaction what a run or monitoring learnt of versions."""
    learnt = [
        (note.rolled_away, VersionState.ROLLED_AWAY),
        (note.healthy, VersionState.HEALTHY),
    ]
    for version, state in learnt:
        if version is None or not version[0]:
            continue
        key = version_key(version[0])
        row = session.get(TargetVersion, (note.environment, note.target, key))
        if row is None:
            row = TargetVersion(environment=note.environment, target=note.target, version=key)
            session.add(row)
        elif note.incident_id is None and _marked_bad(row):
            continue  # monitoring seeing it healthy does not clear it: an approver does
        row.state = state
        row.label = version[1]
        row.incident_id = note.incident_id
        row.at = at
        row.cleared_by = row.cleared_at = row.cleared_reason = None
        session.flush()


class VersionBook(Repository):
    """The marks on targets' versions: learnt, read and cleared."""

    def remember(self, note: VersionNote) -> None:
        """Record a version seen healthy, or one rolled away from, outside a run's end."""
        with self.db.session() as session:
            remember(session, note, at=self.db.clock())

    def _rows(self, *, environment: str, target: str) -> list[TargetVersion]:
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(TargetVersion)
                    .where(TargetVersion.environment == environment, TargetVersion.target == target)
                    .order_by(TargetVersion.at.desc())
                ).all()
            )

    def known(self, *, environment: str, target: str) -> KnownVersions:
        """Return what the bot remembers about a target's versions."""
        rows = self._rows(environment=environment, target=target)
        healthy = next((r for r in rows if r.state == VersionState.HEALTHY), None)
        return KnownVersions(
            healthy=healthy.version if healthy else None,
            healthy_label=healthy.label if healthy else "",
            healthy_incident=healthy.incident_id if healthy else None,
            rolled_away={
                r.version: r.incident_id or "an earlier incident" for r in rows if _marked_bad(r)
            },
            healthy_keys=tuple(r.version for r in rows if r.state == VersionState.HEALTHY),
        )

    def marks(self, *, environment: str, target: str) -> list[VersionMark]:
        """Everything kept about a target's versions, newest first."""
        return [_mark(r) for r in self._rows(environment=environment, target=target)]

    def bad(self, *, limit: int = 50) -> list[VersionMark]:
        """The versions marked bad and not cleared, in every environment, newest first."""
        with self.db.reading() as session:
            rows = session.scalars(
                select(TargetVersion)
                .where(
                    TargetVersion.state == VersionState.ROLLED_AWAY,
                    TargetVersion.cleared_at.is_(None),
                )
                .order_by(TargetVersion.at.desc())
                .limit(limit)
            ).all()
            return [_mark(r) for r in rows]

    def clear(self, marks: Iterable[VersionMark], *, by: str, reason: str) -> list[VersionMark]:
        """Clear bad marks for `by` with `reason`, each with an audit event, in one transaction.

        Each write holds only while the mark is still bad (a second approver clearing at the
        same moment changes nothing): Conflict, and nothing written, when one is not.
        """
        now = self.db.clock()
        cleared = []
        with self.db.session() as session:
            for mark in marks:
                result = session.execute(
                    update(TargetVersion)
                    .where(
                        TargetVersion.environment == mark.environment,
                        TargetVersion.target == mark.target,
                        TargetVersion.version == mark.version,
                        TargetVersion.state == VersionState.ROLLED_AWAY,
                        TargetVersion.cleared_at.is_(None),
                    )
                    .values(cleared_by=by, cleared_at=now, cleared_reason=reason)
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    raise Conflict(f"{mark.label or mark.version} changed while clearing it")
                if mark.incident_id is not None:
                    session.add(
                        Event(
                            incident_id=mark.incident_id,
                            at=now,
                            kind=CLEARED,
                            actor=by,
                            detail={
                                "environment": mark.environment,
                                "target": mark.target,
                                "version": mark.version,
                                "label": mark.label,
                                "reason": reason,
                            },
                        )
                    )
                cleared.append(mark)
        return [replace(m, cleared_by=by, cleared_at=now, cleared_reason=reason) for m in cleared]

    def endings(self, *, environment: str, target: str) -> list[Ending]:
        """The target's rollbacks that succeeded (drills left out), newest first: each ended
        its incident by moving the target to the version it went to."""
        with self.db.reading() as session:
            rows = session.execute(
                select(Run.incident_id, Run.to_key, Run.to_version, Run.from_key, Run.finished_at)
                .where(
                    Run.environment == environment,
                    Run.target == target,
                    Run.state == "succeeded",
                    Run.kind != RunKind.DRILL,
                    Run.to_key.is_not(None),
                )
                .order_by(Run.created_at.desc())
                .limit(ENDINGS)
            ).all()
        return [
            Ending(
                incident_id=r[0],
                to_key=r[1] or "",
                to_label=r[2] or r[1] or "",
                from_key=r[3],
                finished_at=r[4],
            )
            for r in rows
        ]
