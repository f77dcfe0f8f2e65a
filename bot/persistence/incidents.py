"""Incidents and their audit trail (the events every change appends)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.persistence.database import Repository
from bot.persistence.journal import add_event
from bot.persistence.models import Event, Incident, Run


class Incidents(Repository):
    """Incidents: opened with their first event, told their Slack card, resolved."""

    def _new_id(self, session: Session) -> str:
        """Return `INC-YYYYMMDD-HHMMSS`, with `-2`, `-3`… when the second is taken.

        Candidates are looked up by primary key, 20 at a time: no LIKE, which
        PostgreSQL cannot serve from the key under a non-C collation.
        """
        base = f"INC-{self.db.clock():%Y%m%d-%H%M%S}"
        for first in range(1, 10_000, 20):
            names = [base if n == 1 else f"{base}-{n}" for n in range(first, first + 20)]
            taken = set(session.scalars(select(Incident.id).where(Incident.id.in_(names))).all())
            free = next((name for name in names if name not in taken), None)
            if free is not None:
                return free
        raise RuntimeError(f"10,000 incidents opened in the second {base}; try again")

    def create(self, **fields: Any) -> Incident:
        """Insert an incident with a fresh id and its `incident.opened` event; retry on id races."""
        for _ in range(20):
            try:
                with self.db.session() as session:
                    now = self.db.clock()
                    incident = Incident(id=self._new_id(session), created_at=now, **fields)
                    session.add(incident)
                    session.flush()
                    add_event(
                        session,
                        at=now,
                        incident_id=incident.id,
                        kind="incident.opened",
                        actor=fields.get("opened_by"),
                        detail={"severity": fields.get("severity"), "source": fields.get("source")},
                    )
                    return incident
            except IntegrityError:
                continue
        raise RuntimeError("could not allocate an incident id")

    def discard(self, incident_id: str) -> None:
        """Delete an incident that never got a run (it lost the race for its target)."""
        with self.db.session() as session:
            if session.scalars(select(Run.id).where(Run.incident_id == incident_id)).first():
                return
            session.execute(delete(Event).where(Event.incident_id == incident_id))
            session.execute(delete(Incident).where(Incident.id == incident_id))

    def get(self, incident_id: str) -> Incident | None:
        """Return an incident, or None."""
        with self.db.reading() as session:
            return session.get(Incident, incident_id, populate_existing=True)

    def _set(self, incident_id: str, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(update(Incident).where(Incident.id == incident_id).values(**values))

    def set_card(self, incident_id: str, *, channel: str, card_ts: str) -> None:
        """Record where the incident's card was posted."""
        self._set(incident_id, channel=channel, card_ts=card_ts)

    def set_reason(self, incident_id: str, *, reason: str, recommendation: str | None) -> None:
        """Record the decision matrix's reason and recommendation, weighed with the verdicts."""
        self._set(incident_id, reason=reason, recommendation=recommendation)

    def resolve(self, incident_id: str, *, at: datetime) -> None:
        """Record that the incident was resolved at `at`."""
        self._set(incident_id, resolved_at=at)


class Events(Repository):
    """The audit trail: what happened to an incident, by whom, in order."""

    def add(
        self,
        *,
        incident_id: str,
        kind: str,
        actor: str | None = None,
        run_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit event."""
        with self.db.session() as session:
            add_event(
                session,
                at=self.db.clock(),
                incident_id=incident_id,
                run_id=run_id,
                kind=kind,
                actor=actor,
                detail=detail or {},
            )

    def of(self, incident_id: str) -> list[Event]:
        """Return an incident's events in order."""
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(Event).where(Event.incident_id == incident_id).order_by(Event.id)
                ).all()
            )
