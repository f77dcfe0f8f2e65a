"""The bot's stored records as the layers above persistence read them.

Each is a read-only protocol that the ORM row (`bot/persistence/models.py`) satisfies as it is:
the Slack side, the use cases and the pure computations over a run (its aftermath, its recovery
phases, its chart) take these, so a reader can neither write a row nor reach a session. The
runner's own bookkeeping (the lease, the row version) is left out; step memory is read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.domain.verdict import Verdict


@dataclass(frozen=True)
class StepView:
    """A step's record."""

    position: int
    name: str
    state: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    summary: str
    output: str
    data: dict[str, Any]


class IncidentRecord(Protocol):
    """An incident as read: what was reported, by whom, where its card is."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def environment(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def severity(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def opened_by(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def answers(self) -> dict[str, Any]: ...

    @property
    def recommendation(self) -> str | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def detected_at(self) -> datetime | None: ...

    @property
    def channel(self) -> str | None: ...

    @property
    def card_ts(self) -> str | None: ...

    @property
    def resolved_at(self) -> datetime | None: ...


class RunRecord(Protocol):
    """A run as read: its plan, state, people, versions and Slack thread."""

    @property
    def id(self) -> str: ...

    @property
    def incident_id(self) -> str: ...

    @property
    def environment(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def point(self) -> str | None: ...

    @property
    def plan(self) -> list[Any]: ...

    @property
    def plan_hash(self) -> str: ...

    @property
    def requester(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def approvals_required(self) -> int: ...

    @property
    def break_glass(self) -> bool: ...

    @property
    def review_required(self) -> bool: ...

    @property
    def force(self) -> bool: ...

    @property
    def needs_manual(self) -> bool: ...

    @property
    def outcome(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def expires_at(self) -> datetime: ...

    @property
    def approved_at(self) -> datetime | None: ...

    @property
    def started_at(self) -> datetime | None: ...

    @property
    def finished_at(self) -> datetime | None: ...

    @property
    def auto_approve_at(self) -> datetime | None: ...

    @property
    def from_version(self) -> str | None: ...

    @property
    def to_version(self) -> str | None: ...

    @property
    def from_key(self) -> str | None: ...

    @property
    def to_key(self) -> str | None: ...

    @property
    def verdicts(self) -> tuple[Verdict, ...] | None: ...

    @property
    def plan_stale_at(self) -> datetime | None: ...

    @property
    def retries(self) -> int: ...

    @property
    def leave_maintenance_on(self) -> bool: ...

    @property
    def notify_customers(self) -> bool: ...

    @property
    def memory(self) -> Mapping[str, Any]: ...

    @property
    def notes(self) -> list[Any] | None: ...

    @property
    def slack(self) -> dict[str, Any]: ...


class EventRecord(Protocol):
    """One entry of an incident's timeline."""

    @property
    def id(self) -> int: ...

    @property
    def incident_id(self) -> str: ...

    @property
    def run_id(self) -> str | None: ...

    @property
    def at(self) -> datetime: ...

    @property
    def kind(self) -> str: ...

    @property
    def actor(self) -> str | None: ...

    @property
    def detail(self) -> dict[str, Any]: ...


class PostRecord(Protocol):
    """A message the bot posted in a run's thread, by slot."""

    @property
    def run_id(self) -> str: ...

    @property
    def slot(self) -> str: ...

    @property
    def channel(self) -> str: ...

    @property
    def ts(self) -> str: ...

    @property
    def at(self) -> datetime: ...


class OutboxRecord(Protocol):
    """A message to people kept until the sender delivered it."""

    @property
    def id(self) -> int: ...

    @property
    def run_id(self) -> str | None: ...

    @property
    def kind(self) -> str: ...

    @property
    def detail(self) -> dict[str, Any]: ...

    @property
    def state(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def next_attempt_at(self) -> datetime | None: ...

    @property
    def sent_at(self) -> datetime | None: ...

    @property
    def last_error(self) -> str: ...


class ReviewRecord(Protocol):
    """A break-glass run's review: who owns it, who did it when."""

    @property
    def run_id(self) -> str: ...

    @property
    def incident_id(self) -> str: ...

    @property
    def environment(self) -> str: ...

    @property
    def requester(self) -> str: ...

    @property
    def reviewer(self) -> str: ...

    @property
    def assigned_at(self) -> datetime: ...

    @property
    def reviewed_by(self) -> str | None: ...

    @property
    def reviewed_at(self) -> datetime | None: ...


class ResumeRecord(Protocol):
    """Who pressed Resume sync for a run's GitOps owners, and what came of it."""

    @property
    def run_id(self) -> str: ...

    @property
    def by(self) -> str: ...

    @property
    def at(self) -> datetime: ...

    @property
    def state(self) -> str: ...

    @property
    def outcome(self) -> str: ...
