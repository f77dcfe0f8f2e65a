"""Re-checks of undo steps (`bot.execution.recheck`) and GitOps sync resumes
(`bot.application.resync`).

A due re-check is claimed like a run: a conditional UPDATE that bumps its fencing
token, the candidate picked FOR UPDATE SKIP LOCKED on PostgreSQL; its result, its
event and its message are written in one transaction only while that claim holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bot.domain.states import RecheckState
from bot.persistence.database import Repository
from bot.persistence.journal import add_event, add_message, add_run_event
from bot.persistence.models import Recheck, Run, SyncResume


class Rechecks(Repository):
    """Re-checks: scheduled once, claimed by one process at a time, settled with their event."""

    def schedule(
        self,
        run: Run,
        *,
        position: int,
        source: str,
        step: str,
        spec: dict[str, Any],
        due_at: datetime,
    ) -> bool:
        """Add a re-check of the undo step at `position`; False if it was already scheduled."""
        try:
            with self.db.session() as session:
                session.add(
                    Recheck(
                        run_id=run.id,
                        incident_id=run.incident_id,
                        position=position,
                        source=source,
                        step=step,
                        spec=spec,
                        due_at=due_at,
                        state=RecheckState.PENDING,
                        attempts=0,
                        claim_generation=0,
                        outcome="",
                    )
                )
            return True
        except IntegrityError:
            return False

    def of(self, run_id: str) -> list[Recheck]:
        """Return a run's re-checks in plan order."""
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(Recheck).where(Recheck.run_id == run_id).order_by(Recheck.position)
                ).all()
            )

    def claim_next(self, *, owner: str, seconds: float) -> Recheck | None:
        """Claim the oldest due re-check nobody holds (or whose holder's claim ran out)."""
        now = self.db.clock()
        due = (Recheck.state == RecheckState.PENDING) | (
            (Recheck.state == RecheckState.CHECKING) & (Recheck.claim_expires_at < now)
        )
        with self.db.session() as session:
            found = session.scalar(
                select(Recheck.id)
                .where(due, Recheck.due_at <= now)
                .order_by(Recheck.due_at, Recheck.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if found is None:
                return None
            result = session.execute(
                update(Recheck)
                .where(Recheck.id == found, due)
                .values(
                    state=RecheckState.CHECKING,
                    claimed_by=owner,
                    claim_expires_at=now + timedelta(seconds=seconds),
                    claim_generation=Recheck.claim_generation + 1,
                    attempts=Recheck.attempts + 1,
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            return session.get(Recheck, found)

    def settle(
        self,
        recheck: Recheck,
        *,
        state: str,
        outcome: str,
        changed: bool | None = None,
        notify: str | None = None,
        detail: dict[str, Any] | None = None,
        due_at: datetime | None = None,
        spec: dict[str, Any] | None = None,
        event: bool = True,
    ) -> bool:
        """Record a claimed re-check's result with its event and message, while the claim holds.

        `state` pending (with `due_at`) hands it back for a later attempt. `spec` replaces what
        the row remembers (the hold's progress); `event=False` leaves no audit event (a poll
        that found nothing new). False, and nothing written, when another process claimed it
        since.
        """
        now = self.db.clock()
        with self.db.session() as session:
            values: dict[str, Any] = {
                "state": state,
                "outcome": outcome,
                "changed": changed,
                "claimed_by": None,
                "claim_expires_at": None,
            }
            if due_at is not None:
                values["due_at"] = due_at
            if spec is not None:
                values["spec"] = spec
            if state != RecheckState.PENDING:
                values["checked_at"] = now
            result = session.execute(
                update(Recheck)
                .where(
                    Recheck.id == recheck.id,
                    Recheck.state == RecheckState.CHECKING,
                    Recheck.claimed_by == recheck.claimed_by,
                    Recheck.claim_generation == recheck.claim_generation,
                )
                .values(**values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            said = {"position": recheck.position, "outcome": outcome, **(detail or {})}
            if notify is not None:
                add_message(session, at=now, run_id=recheck.run_id, kind=notify, detail=said)
            if not event:
                return True
            add_event(
                session,
                at=now,
                incident_id=recheck.incident_id,
                run_id=recheck.run_id,
                kind=f"recheck.{state}",
                actor=None,
                detail={**said, "changed": changed},
            )
            return True


class Resumes(Repository):
    """Who pressed Resume sync on a run's held GitOps sync, and how it went."""

    def begin(self, run_id: str, *, by: str) -> SyncResume | None:
        """Record that `by` resumes the run's GitOps sync now; the earlier record if taken.

        A record whose attempt failed is taken over; one resuming or resumed is returned.
        """
        now = self.db.clock()
        try:
            with self.db.session() as session:
                session.add(SyncResume(run_id=run_id, by=by, at=now, state="resuming", outcome=""))
            return None
        except IntegrityError:
            pass
        with self.db.session() as session:
            retried = session.execute(
                update(SyncResume)
                .where(SyncResume.run_id == run_id, SyncResume.state == "failed")
                .values(by=by, at=now, state="resuming", outcome="")
            )
            if retried.rowcount:  # type: ignore[attr-defined]
                return None
            return session.get(SyncResume, run_id)

    def end(
        self,
        run: Run,
        *,
        by: str,
        ok: bool,
        outcome: str,
        detail: dict[str, Any],
    ) -> None:
        """Record how the resume went, with its audit event and its thread message, at once."""
        state = "resumed" if ok else "failed"
        now = self.db.clock()
        with self.db.session() as session:
            session.execute(
                update(SyncResume)
                .where(SyncResume.run_id == run.id, SyncResume.by == by)
                .values(state=state, outcome=outcome)
            )
            said = {**detail, "by": by, "ok": ok, "outcome": outcome}
            add_message(session, at=now, run_id=run.id, kind="gitops.resumed", detail=said)
            add_run_event(
                session,
                run,
                at=now,
                kind="sync.resumed" if ok else "sync.resume_failed",
                actor=by,
                detail=said,
            )

    def get(self, run_id: str) -> SyncResume | None:
        """Return the run's Resume sync record, if anyone pressed it."""
        with self.db.reading() as session:
            return session.get(SyncResume, run_id)
