"""What a change appends in its own transaction: its audit event and its messages to people.

Every repository that changes something people follow writes the event (and, where the
change is said in Slack, the outbox message) with the change, in the same session, so
neither exists without the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.persistence.models import Event, OutboxMessage, Run


def add_event(
    session: Session,
    *,
    at: datetime,
    incident_id: str,
    kind: str,
    actor: str | None,
    detail: dict[str, Any],
    run_id: str | None = None,
) -> None:
    """Append an audit event to `session`'s transaction."""
    session.add(
        Event(incident_id=incident_id, run_id=run_id, at=at, kind=kind, actor=actor, detail=detail)
    )


def add_run_event(
    session: Session,
    run: Run,
    *,
    at: datetime,
    kind: str,
    actor: str | None,
    detail: dict[str, Any],
) -> None:
    """Append an audit event about `run` (on its incident) to `session`'s transaction."""
    add_event(
        session,
        at=at,
        incident_id=run.incident_id,
        run_id=run.id,
        kind=kind,
        actor=actor,
        detail=detail,
    )


def add_message(
    session: Session, *, at: datetime, run_id: str | None, kind: str, detail: dict[str, Any]
) -> None:
    """Queue a message to people (`bot.execution.outbox`) in `session`'s transaction."""
    session.add(
        OutboxMessage(
            run_id=run_id,
            kind=kind,
            detail=detail,
            state="pending",
            attempts=0,
            created_at=at,
            last_error="",
        )
    )
