"""Approvals of a run's plan: each approver once per plan, counted in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.domain.records import RunRecord
from bot.persistence.database import Conflict, Repository
from bot.persistence.journal import add_run_event
from bot.persistence.models import Approval, Run
from bot.persistence.runs import bump, fresh


def _count(session: Session, run: Run, *, since: datetime) -> int:
    return (
        session.scalar(
            select(func.count(func.distinct(Approval.approver))).where(
                Approval.run_id == run.id,
                Approval.plan_hash == run.plan_hash,
                Approval.at >= since,
            )
        )
        or 0
    )


class Approvals(Repository):
    """Who approved which plan of a run, and when."""

    def record(
        self, run: Run, *, approver: str, since: datetime, to_state: str | None
    ) -> tuple[Run, int]:
        """Add `approver`'s approval of the run's plan; move to `to_state` if given.

        `to_state` is decided by the caller from the count it expects; the
        count is re-checked here inside the transaction. Returns the run and
        the number of valid approvals. Raises Conflict when the run changed
        first, IntegrityError when this approver already approved this plan.
        """
        with self.db.session() as session:
            now = self.db.clock()
            session.add(Approval(run_id=run.id, approver=approver, plan_hash=run.plan_hash, at=now))
            session.flush()
            count = _count(session, run, since=since)
            new_state = to_state if to_state and count >= run.approvals_required else run.state
            values: dict[str, Any] = {"state": new_state}
            if new_state != run.state:
                values["approved_at"] = now
            if not bump(session, run, **values):
                raise Conflict(f"run {run.id} changed while approving")
            add_run_event(
                session,
                run,
                at=now,
                kind="run.approved" if new_state != run.state else "approval.added",
                actor=approver,
                detail={"approvals": count, "required": run.approvals_required},
            )
            return fresh(session, run.id), count

    def of(self, run: RunRecord, *, since: datetime) -> list[tuple[str, datetime]]:
        """Return (approver, time) for the run's current plan, approvals at or after `since`."""
        with self.db.reading() as session:
            rows = session.execute(
                select(Approval.approver, Approval.at)
                .where(
                    Approval.run_id == run.id,
                    Approval.plan_hash == run.plan_hash,
                    Approval.at >= since,
                )
                .order_by(Approval.at)
            ).all()
            return [(row[0], row[1]) for row in rows]
