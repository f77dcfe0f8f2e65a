"""Set a run's or a drill's columns directly: a test's way to put a row in a state
(a lease that ran out, a request made long ago) that the bot itself reaches only with time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from bot.persistence.models import Drill, Run
from bot.persistence.store import Store


def set_run_fields(store: Store, run_id: str, **fields: Any) -> None:
    """Write `fields` on the run, whatever they are."""
    with store.session() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**fields))


def set_drill_fields(store: Store, run_id: str, **fields: Any) -> None:
    """Write `fields` on the drill of the run."""
    with store.session() as session:
        session.execute(update(Drill).where(Drill.run_id == run_id).values(**fields))
