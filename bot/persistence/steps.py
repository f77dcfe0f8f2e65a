"""The records of a run's steps, each written with its event under the runner's lease."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.domain.records import StepView
from bot.domain.states import StepState
from bot.persistence.database import Repository
from bot.persistence.journal import add_message, add_run_event
from bot.persistence.leases import Lease, fence
from bot.persistence.models import Run, StepRecord


class Steps(Repository):
    """Step records of runs."""

    def of(self, run_id: str) -> list[StepView]:
        """Return the run's step records in plan order."""
        with self.db.reading() as session:
            rows = session.scalars(
                select(StepRecord).where(StepRecord.run_id == run_id).order_by(StepRecord.position)
            ).all()
            return [
                StepView(
                    r.position,
                    r.name,
                    r.state,
                    r.attempts,
                    r.started_at,
                    r.finished_at,
                    r.summary,
                    r.output,
                    r.data,
                )
                for r in rows
            ]

    def save(
        self,
        run: Run,
        *,
        position: int,
        name: str,
        event_kind: str,
        notify: str | None = None,
        lease: Lease | None = None,
        phase: str | None = None,
        **fields: Any,
    ) -> None:
        """Create or update a step record, with its event (and `notify`), in one transaction.

        With `lease`, only while that lease holds the run (else LeaseLost, nothing written).
        `phase`, the step's in the plan, is said in the event (what came after recovery).
        """
        now = self.db.clock()
        with self.db.session() as session:
            fence(session, lease)
            record = session.scalars(
                select(StepRecord).where(
                    StepRecord.run_id == run.id, StepRecord.position == position
                )
            ).first()
            if record is None:
                record = StepRecord(run_id=run.id, position=position, name=name, state="pending")
                session.add(record)
            for key, value in fields.items():
                setattr(record, key, value)
            detail = {"position": position, "name": name, "state": record.state}
            if phase is not None:
                detail["phase"] = phase
            if record.summary:
                detail["summary"] = record.summary
            if notify is not None:
                said = {"position": position, "attempts": record.attempts or 0}
                add_message(session, at=now, run_id=run.id, kind=notify, detail=said)
            add_run_event(session, run, at=now, kind=event_kind, actor=None, detail=detail)

    def values(self, key: str, *, limit: int = 5) -> list[float]:
        """Return the numeric `data[key]` of the newest finished steps that recorded it."""
        with self.db.reading() as session:
            rows = session.scalars(
                select(StepRecord.data)
                .where(StepRecord.state == StepState.SUCCEEDED, StepRecord.finished_at.is_not(None))
                .order_by(StepRecord.finished_at.desc())
                .limit(200)
            ).all()
        values = [float(d[key]) for d in rows if isinstance(d, dict) and key in d]
        return values[:limit]
