"""Break-glass reviews (`bot.application.reviews`): assigned once, done once."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.persistence.database import Repository
from bot.persistence.journal import add_event, add_run_event
from bot.persistence.models import BreakGlassReview, Run


class Reviews(Repository):
    """Who reviews a break-glass run, and whether they did."""

    def assign(
        self, *, run: Run, reviewer: str, pick: Callable[[int], str] | None = None
    ) -> BreakGlassReview:
        """Assign the review of break-glass `run` to `reviewer` (or `pick(n)`), once.

        `pick` is given how many reviews this environment has had, inside the same
        transaction, for round-robin; a run already assigned keeps its reviewer.
        """
        try:
            with self.db.session() as session:
                if pick is not None:
                    done = session.scalar(
                        select(func.count()).where(BreakGlassReview.environment == run.environment)
                    )
                    reviewer = pick(int(done or 0))
                now = self.db.clock()
                review = BreakGlassReview(
                    run_id=run.id,
                    incident_id=run.incident_id,
                    environment=run.environment,
                    requester=run.requester,
                    reviewer=reviewer,
                    assigned_at=now,
                )
                session.add(review)
                session.flush()
                add_run_event(
                    session,
                    run,
                    at=now,
                    kind="review.assigned",
                    actor=None,
                    detail={"reviewer": reviewer},
                )
                return review
        except IntegrityError:
            existing = self.get(run.id)
            assert existing is not None
            return existing

    def get(self, run_id: str) -> BreakGlassReview | None:
        """Return a run's break-glass review, or None."""
        with self.db.reading() as session:
            return session.get(BreakGlassReview, run_id)

    def mark(self, run_id: str, *, user: str) -> bool:
        """Record that `user` reviewed the run, with its event; False if it already was."""
        now = self.db.clock()
        with self.db.session() as session:
            result = session.execute(
                update(BreakGlassReview)
                .where(BreakGlassReview.run_id == run_id, BreakGlassReview.reviewed_at.is_(None))
                .values(reviewed_by=user, reviewed_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            review = session.get(BreakGlassReview, run_id)
            assert review is not None
            add_event(
                session,
                at=now,
                incident_id=review.incident_id,
                run_id=run_id,
                kind="run.reviewed",
                actor=user,
                detail={"reviewer": review.reviewer},
            )
            return True

    def pending(self, *, limit: int = 50) -> list[BreakGlassReview]:
        """Return the break-glass reviews not yet done, oldest first."""
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(BreakGlassReview)
                    .where(BreakGlassReview.reviewed_at.is_(None))
                    .order_by(BreakGlassReview.assigned_at, BreakGlassReview.run_id)
                    .limit(limit)
                ).all()
            )
