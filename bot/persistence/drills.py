"""Drills (`bot.application.drills`): recorded when requested, settled with what they measured."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bot.persistence.database import Repository, narrowed
from bot.persistence.models import Drill


class Drills(Repository):
    """One row a drill, beside its run."""

    def add(self, **fields: Any) -> Drill:
        """Record a drill when its run is requested."""
        with self.db.session() as session:
            drill = Drill(created_at=self.db.clock(), steps=[], targets={}, **fields)
            session.add(drill)
            return drill

    def get(self, run_id: str) -> Drill | None:
        """Return the drill of a run, or None when the run is not a drill."""
        with self.db.reading() as session:
            return session.get(Drill, run_id)

    def settle(
        self,
        run_id: str,
        *,
        state: str,
        finished_at: datetime,
        recover_seconds: float | None,
        forward_seconds: float | None,
        steps: list[dict[str, Any]],
        targets: dict[str, float],
        verdict: str | None,
        verdict_held: bool | None,
    ) -> None:
        """Set what a drill measured once its run ended."""
        with self.db.session() as session:
            session.execute(
                update(Drill)
                .where(Drill.run_id == run_id)
                .values(
                    state=state,
                    finished_at=finished_at,
                    recover_seconds=recover_seconds,
                    forward_seconds=forward_seconds,
                    steps=steps,
                    targets=targets,
                    verdict=verdict,
                    verdict_held=verdict_held,
                )
            )

    def find(
        self,
        *,
        environment: str | None = None,
        target: str | None = None,
        states: tuple[str, ...] | None = None,
        limit: int = 200,
    ) -> list[Drill]:
        """Return drills, newest first, filtered."""
        query = narrowed(
            select(Drill).order_by(Drill.created_at.desc(), Drill.run_id).limit(limit),
            environment=(Drill.environment, environment),
            target=(Drill.target, target),
            states=(Drill.state, states),
        )
        with self.db.reading() as session:
            return list(session.scalars(query).all())
