"""The bot's database and its repositories, one per aggregate, behind one unit of work.

`Store` is what the composition root builds and hands on: the database (sessions, the
agreed clock, `unit()` for a use case that must commit once) with a repository for each
kind of row. Rules (who may approve, what expires) live in `bot/execution/workflow.py`
and the application layer; the repositories only guarantee that a change happens once
and with its audit event.
"""

from __future__ import annotations

from sqlalchemy import Engine

from bot.domain.records import StepView
from bot.domain.states import TargetBusy
from bot.persistence.approvals import Approvals
from bot.persistence.database import (
    MIGRATIONS,
    Clock,
    Conflict,
    Database,
    SchemaOutOfDate,
    _alembic_config,
    downgrade,
    head_revision,
    make_engine,
    require_current_schema,
    schema_revisions,
    upgrade,
    utcnow,
)
from bot.persistence.drills import Drills
from bot.persistence.entries import Entries
from bot.persistence.incidents import Events, Incidents
from bot.persistence.leases import Lease, LeaseLost, Leases
from bot.persistence.outbox import Outbox, Posts
from bot.persistence.rechecks import Rechecks, Resumes
from bot.persistence.reviews import Reviews
from bot.persistence.runs import Runs
from bot.persistence.steps import Steps
from bot.persistence.versions import VersionBook

__all__ = [
    "MIGRATIONS",
    "Clock",
    "Conflict",
    "Lease",
    "LeaseLost",
    "SchemaOutOfDate",
    "StepView",
    "Store",
    "TargetBusy",
    "_alembic_config",
    "downgrade",
    "head_revision",
    "make_engine",
    "require_current_schema",
    "schema_revisions",
    "upgrade",
    "utcnow",
]


class Store(Database):
    """The database with its repositories: `store.runs.get(id)`, `store.outbox.enqueue(…)`."""

    def __init__(
        self, engine: Engine, *, clock: Clock | None = None, process_clock: Clock = utcnow
    ) -> None:
        super().__init__(engine, clock=clock, process_clock=process_clock)
        self.incidents = Incidents(self)
        self.events = Events(self)
        self.runs = Runs(self)
        self.leases = Leases(self)
        self.steps = Steps(self)
        self.approvals = Approvals(self)
        self.versions = VersionBook(self)
        self.outbox = Outbox(self)
        self.posts = Posts(self)
        self.reviews = Reviews(self)
        self.entries = Entries(self)
        self.rechecks = Rechecks(self)
        self.resumes = Resumes(self)
        self.drills = Drills(self)
