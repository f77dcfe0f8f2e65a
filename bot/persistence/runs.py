"""Runs: requested with their target locks, moved from state to state with their events.

A transition is a conditional UPDATE on (id, state, version). Zero rows
updated means somebody else changed the run first; the caller re-reads and
decides. That works the same on SQLite and PostgreSQL. A run's other facts
(its versions, its veto deadline, its plan's staleness, its Slack thread) each
have their own write, named for what it records.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.domain.states import TERMINAL_STATES, RunState, TargetBusy
from bot.domain.versions import VersionNote
from bot.persistence.database import Conflict, Repository, narrowed
from bot.persistence.journal import add_message, add_run_event
from bot.persistence.leases import Lease, fence
from bot.persistence.models import Event, Run, StepRecord, TargetLock
from bot.persistence.versions import remember


def bump(session: Session, run: Run, *, lease: Lease | None = None, **values: Any) -> bool:
    """Change the run only if it is still in the state and version `run` was read at."""
    query = update(Run).where(Run.id == run.id, Run.state == run.state, Run.version == run.version)
    if lease is not None:
        query = query.where(*lease.holds())
    result = session.execute(query.values(version=Run.version + 1, **values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fresh(session: Session, run_id: str) -> Run:
    """The run as this transaction now sees it."""
    row = session.get(Run, run_id, populate_existing=True)
    assert row is not None
    return row


class Runs(Repository):
    """Runs and the target locks they hold."""

    def create(self, *, locks: list[str], actor: str, **fields: Any) -> Run:
        """Insert a requested run holding `locks` on its environment, or raise TargetBusy."""
        run_id = secrets.token_hex(8)
        now = self.db.clock()
        try:
            with self.db.session() as session:
                run = Run(id=run_id, created_at=now, state=RunState.REQUESTED, version=0, **fields)
                session.add(run)
                session.flush()
                self._lock(session, run, locks)
                add_run_event(
                    session,
                    run,
                    at=now,
                    kind="run.requested",
                    actor=actor,
                    detail={"target": run.target, "point": run.point, "plan_hash": run.plan_hash},
                )
                return run
        except IntegrityError:
            self._busy(fields["environment"], fields["target"], locks)
            raise

    @staticmethod
    def _lock(session: Session, run: Run, locks: list[str]) -> None:
        for target in locks:
            session.add(
                TargetLock(
                    environment=run.environment,
                    target=target,
                    run_id=run.id,
                    incident_id=run.incident_id,
                )
            )
        session.flush()

    def _busy(self, environment: str, target: str, locks: list[str]) -> None:
        """Raise TargetBusy naming the incident that holds one of `locks`, if one does."""
        holder = self.lock_holder(environment=environment, targets=locks)
        if holder is not None:
            raise TargetBusy(environment=environment, target=target, incident_id=holder) from None

    def lock_holder(self, *, environment: str, targets: list[str]) -> str | None:
        """Return the incident holding any of `targets`, or None."""
        with self.db.reading() as session:
            return session.scalars(
                select(TargetLock.incident_id).where(
                    TargetLock.environment == environment, TargetLock.target.in_(targets)
                )
            ).first()

    def get(self, run_id: str) -> Run | None:
        """Return a run, or None."""
        with self.db.reading() as session:
            return session.get(Run, run_id, populate_existing=True)

    def find(
        self,
        *,
        incident_id: str | None = None,
        environment: str | None = None,
        target: str | None = None,
        states: tuple[str, ...] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Return runs, newest first, filtered."""
        query = narrowed(
            select(Run).order_by(Run.created_at.desc(), Run.id).limit(limit),
            incident=(Run.incident_id, incident_id),
            environment=(Run.environment, environment),
            target=(Run.target, target),
            states=(Run.state, states),
        )
        with self.db.reading() as session:
            return list(session.scalars(query).all())

    def unresolved_failures(self, *, limit: int = 20) -> list[Run]:
        """Failed runs nobody has marked resolved since they failed, newest first.

        A failed run may still hold production in maintenance or half rolled back: it stays
        in status and App Home until a person resolves it (a `run.resolved` event after its
        latest `run.failed`; a retry that succeeds leaves the failed state anyway).
        """
        failed = (
            select(func.max(Event.at))
            .where(Event.run_id == Run.id, Event.kind == "run.failed")
            .correlate(Run)
            .scalar_subquery()
        )
        resolved = (
            select(Event.id)
            .where(Event.run_id == Run.id, Event.kind == "run.resolved", Event.at >= failed)
            .correlate(Run)
            .exists()
        )
        query = (
            select(Run)
            .where(Run.state == "failed", ~resolved)
            .order_by(Run.created_at.desc(), Run.id)
            .limit(limit)
        )
        with self.db.reading() as session:
            return list(session.scalars(query).all())

    def transition(
        self,
        run: Run,
        *,
        to: str,
        kind: str,
        actor: str | None,
        detail: dict[str, Any] | None = None,
        notify: str | None = None,
        lease: Lease | None = None,
        versions: VersionNote | None = None,
        **fields: Any,
    ) -> Run:
        """Move `run` from its current state to `to` with its event, or raise Conflict.

        `notify` enqueues that message to people in the same transaction (`bot.execution.outbox`).
        With `lease`, the change is made only while that lease holds the run (LeaseLost).
        `versions` records what the run taught about its target's versions, in the same
        transaction.
        """
        now = self.db.clock()
        with self.db.session() as session:
            if not bump(session, run, lease=lease, state=to, **fields):
                fence(session, lease)
                raise Conflict(f"run {run.id} changed before the {kind} could be recorded")
            if versions is not None:
                remember(session, versions, at=now)
            if notify is not None:
                add_message(session, at=now, run_id=run.id, kind=notify, detail=detail or {})
            if to in TERMINAL_STATES:
                session.execute(delete(TargetLock).where(TargetLock.run_id == run.id))
            add_run_event(session, run, at=now, kind=kind, actor=actor, detail=detail or {})
            return fresh(session, run.id)

    def retry(
        self,
        run: Run,
        *,
        actor: str,
        locks: list[str],
        positions: list[int],
        retries: int,
        detail: dict[str, Any],
    ) -> Run:
        """Make a failed run approved again to re-run the steps at `positions` (their records go).

        One transaction: the state change, the target locks taken again (TargetBusy when
        another rollback holds one now), the step records dropped, the retry counted and the event.
        """
        try:
            with self.db.session() as session:
                values: dict[str, Any] = {"state": RunState.APPROVED, "retries": retries}
                if not bump(session, run, needs_manual=False, outcome="", **values):
                    raise Conflict(f"run {run.id} changed before the retry could be recorded")
                self._lock(session, run, locks)
                session.execute(
                    delete(StepRecord).where(
                        StepRecord.run_id == run.id, StepRecord.position.in_(positions)
                    )
                )
                add_run_event(
                    session, run, at=self.db.clock(), kind="run.retry", actor=actor, detail=detail
                )
                return fresh(session, run.id)
        except IntegrityError:
            self._busy(run.environment, run.target, locks)
            raise

    def due_for_expiry(self) -> list[Run]:
        """Return requested runs past their expiry time."""
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(Run).where(
                        Run.state == RunState.REQUESTED, Run.expires_at < self.db.clock()
                    )
                ).all()
            )

    def due_for_auto_approval(self) -> list[Run]:
        """Return requested runs whose veto window has ended, oldest deadline first."""
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(Run)
                    .where(Run.state == RunState.REQUESTED, Run.auto_approve_at <= self.db.clock())
                    .order_by(Run.auto_approve_at)
                ).all()
            )

    # a run's facts other than its state ---------------------------------------------

    def _set(self, run_id: str, **values: Any) -> None:
        with self.db.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(**values))

    def set_versions(
        self,
        run_id: str,
        *,
        from_version: str,
        to_version: str,
        from_key: str | None = None,
        to_key: str | None = None,
    ) -> None:
        """Keep the from → to versions the run was requested with, in the target's words;
        the keys only for a target whose members do not keep their own."""
        keys = {} if from_key is None else {"from_key": from_key, "to_key": to_key}
        self._set(run_id, from_version=from_version, to_version=to_version, **keys)

    def set_auto_approve_at(self, run_id: str, at: datetime | None) -> None:
        """Arm the run's veto window to end at `at`; None withholds automatic approval."""
        self._set(run_id, auto_approve_at=at)

    def set_plan_stale_at(self, run_id: str, at: datetime | None) -> None:
        """Record when the run's plan was found stale; None when it is current again."""
        self._set(run_id, plan_stale_at=at)

    def set_approvals_required(self, run_id: str, count: int) -> None:
        """How many approvals the run needs (a drill's own rule)."""
        self._set(run_id, approvals_required=count)

    def set_thread(self, run_id: str, *, channel: str, thread_ts: str, plan_ts: str) -> None:
        """Record the run's Slack thread and the plan message that opened it."""
        self._set(run_id, slack={"channel": channel, "thread_ts": thread_ts, "plan_ts": plan_ts})

    def note_message(self, run_id: str, key: str, ts: str) -> None:
        """Add the ts of one more message of the run's thread (`key`, e.g. `outcome_ts`)."""
        with self.db.session() as session:
            row = session.get(Run, run_id, populate_existing=True, with_for_update=True)
            if row is not None:
                session.execute(
                    update(Run).where(Run.id == run_id).values(slack={**row.slack, key: ts})
                )
