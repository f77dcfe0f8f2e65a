"""Runners' fenced leases on runs, and the step memory a lease holder saves.

A lease is (owner, generation, expiry). Expiry is computed and compared on the
database's clock, never a process's own, so two bot hosts whose clocks disagree
still agree on who holds a run. Every claim bumps `lease_generation`, the
fencing token: each write a runner makes about a run (transitions, step records,
memory, release) is conditional on its generation in the same transaction, on
the run's row, so a runner that lost its lease cannot write over its successor.
Claiming uses FOR UPDATE SKIP LOCKED on PostgreSQL, so runners in several
processes share the work; SQLite, the embedded default, is for one bot process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.domain.states import EXECUTABLE_STATES
from bot.persistence.database import Repository
from bot.persistence.models import Run


@dataclass(frozen=True)
class Lease:
    """A runner's hold on a run: its owner and the fencing token its claim got."""

    run_id: str
    owner: str
    generation: int
    previous_owner: str | None = None
    """Who held the run before this claim (a crashed or stalled runner), if anyone."""

    def holds(self) -> tuple[Any, ...]:
        """WHERE clauses true only while this lease is the run's current one."""
        return (
            Run.id == self.run_id,
            Run.lease_owner == self.owner,
            Run.lease_generation == self.generation,
        )


class LeaseLost(RuntimeError):
    """Another runner claimed the run since: stop, write nothing more about it."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        super().__init__(
            f"{lease.owner} lost its lease on run {lease.run_id} (generation {lease.generation})"
        )


def fence(session: Session, lease: Lease | None) -> None:
    """Raise LeaseLost unless `lease` still holds its run; lock the run's row till commit."""
    if lease is None:
        return
    result = session.execute(
        update(Run).where(*lease.holds()).values(lease_generation=Run.lease_generation)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise LeaseLost(lease)


class Leases(Repository):
    """Claiming, renewing and giving back runs' leases."""

    def _free(self) -> Any:
        return (Run.lease_owner.is_(None)) | (Run.lease_expires_at < self.db.db_now())

    def claim(self, run_id: str, *, owner: str, seconds: float) -> Lease | None:
        """Take the run's lease if it is free or expired; return it (with its new token)."""
        with self.db.session() as session:
            return self._claim(session, run_id, owner=owner, seconds=seconds)

    def _claim(self, session: Session, run_id: str, *, owner: str, seconds: float) -> Lease | None:
        previous = session.scalar(select(Run.lease_owner).where(Run.id == run_id))
        generation = session.scalar(
            update(Run)
            .where(Run.id == run_id, Run.state.in_(EXECUTABLE_STATES), self._free())
            .values(
                lease_owner=owner,
                lease_expires_at=self.db.db_now(seconds),
                lease_generation=Run.lease_generation + 1,
            )
            .returning(Run.lease_generation)
        )
        if generation is None:
            return None
        return Lease(run_id, owner, int(generation), previous_owner=previous)

    def claim_next(
        self, *, owner: str, seconds: float, skip: set[str] | None = None
    ) -> Lease | None:
        """Claim the oldest approved or running run nobody holds; None when there is none.

        On PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED, so
        runners of several processes claiming at once each get a different run
        without waiting on each other; SQLite serializes writers anyway.
        """
        with self.db.session() as session:
            query = (
                select(Run.id)
                .where(Run.state.in_(EXECUTABLE_STATES), self._free())
                .order_by(Run.approved_at, Run.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if skip:
                query = query.where(Run.id.not_in(skip))
            run_id = session.scalar(query)
            if run_id is None:
                return None
            return self._claim(session, run_id, owner=owner, seconds=seconds)

    def renew(self, lease: Lease, *, seconds: float) -> bool:
        """Extend the lease we hold; False if it was lost (someone claimed it since)."""
        with self.db.session() as session:
            result = session.execute(
                update(Run).where(*lease.holds()).values(lease_expires_at=self.db.db_now(seconds))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, lease: Lease) -> None:
        """Give the lease back (only if it is still ours)."""
        with self.db.session() as session:
            session.execute(
                update(Run).where(*lease.holds()).values(lease_owner=None, lease_expires_at=None)
            )

    def save_memory(self, run_id: str, memory: dict[str, Any], *, lease: Lease | None) -> None:
        """Save a run's step memory, only while `lease` still holds the run."""
        with self.db.session() as session:
            query = update(Run).where(Run.id == run_id)
            if lease is not None:
                query = query.where(*lease.holds())
            result = session.execute(query.values(memory=memory))
            if lease is not None and not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(lease)

    def claimable(self) -> list[str]:
        """Return ids of approved or running runs whose lease is free or expired."""
        with self.db.reading() as session:
            return list(
                session.scalars(
                    select(Run.id)
                    .where(Run.state.in_(EXECUTABLE_STATES), self._free())
                    .order_by(Run.approved_at)
                ).all()
            )
