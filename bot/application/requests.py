"""What the use cases take and give back: a request to open an incident, what opened, the
points offered for a target, how a Slack request was received before, and the `Thread`
protocol the Slack side implements so that `bot` stays free of Slack."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from actions.base import RollbackPoint
from bot.domain.decision import Answers, Severity
from bot.domain.records import IncidentRecord, RunRecord
from bot.domain.versions import KnownVersions, version_key


class ThreadNotOpened(Exception):
    """Slack refused the incident thread. `advice` says what to do.

    `withdrawn` is True once the flow has cancelled the run; False only when a
    break-glass run had already been started by the runner, which goes on.
    """

    def __init__(
        self, reason: str, advice: str, *, withdrawn: bool = True, run_id: str | None = None
    ) -> None:
        super().__init__(f"{reason}. {advice}")
        self.reason = reason
        self.advice = advice
        self.withdrawn = withdrawn
        self.run_id = run_id
        """The run the thread was for, so the person can still be told through the outbox."""


NOTICE = "person.notice"
"""Outbox message: tell one person something by direct message (`notify_person`)."""

CHANGED = "run.changed"
"""Outbox message: redraw the run's card and plan (after a click or monitoring's decision)."""


class Thread(Protocol):
    """What the flows need from the Slack side."""

    def open(self, incident: IncidentRecord, run: RunRecord) -> RunRecord:
        """Post the incident thread; raise ThreadNotOpened if Slack refuses it."""

    def post_checklist(self, run: RunRecord) -> None:
        """Re-render the run's verification checklist."""

    def stale(self, run_id: str) -> None:
        """Tell everyone in the thread that the plan is out of date, with a way to re-plan."""

    def review(self, run_id: str) -> None:
        """Post, or re-render, the run's break-glass review message."""


@dataclass(frozen=True)
class IncidentRequest:
    """A person's (or monitoring's) request to roll `target` back in `environment`."""

    environment: str
    target: str
    requester: str
    severity: Severity
    answers: Answers
    point: str | None = None
    summary: str = ""
    force: bool = False
    break_glass: bool = False
    confirmation: str = ""
    ticked: frozenset[str] = frozenset()
    leave_maintenance_on: bool = False
    """Leave maintenance mode on if the rollback fails (for people to look;
    `bot.domain.aftermath`)."""
    notify_customers: bool | None = None
    """Send the customer e-mail after the rollback; None: as the config's policy says for
    the severity (`CommunicationsPolicy.notify_customers`)."""
    source: str = "slack"
    detected_at: datetime | None = None


@dataclass(frozen=True)
class Opened:
    """An incident whose thread is up and whose run waits for approval (or started)."""

    incident: IncidentRecord
    run: RunRecord

    @property
    def started(self) -> bool:
        """Whether the run needs no further approval (break-glass)."""
        return self.run.state == "approved"


@dataclass(frozen=True)
class Offer:
    """A target's rollback points as offered to people, and the default among them.

    Points rolled away from are labelled and never the default (`bot.domain.plans.remembered`);
    the default is the last known healthy version. `default` is None when production
    already runs that version (`at_healthy`): nothing known is better, a person chooses.
    """

    points: list[RollbackPoint]
    default: RollbackPoint | None
    known: KnownVersions

    @property
    def healthy_label(self) -> str:
        """The last known healthy version in the target's words now (its ref may have moved)."""
        point = next((p for p in self.points if version_key(p.key) == self.known.healthy), None)
        return point.label if point is not None else self.known.healthy_label

    @property
    def at_healthy(self) -> bool:
        """Whether what runs now is the last known healthy version."""
        return self.known.healthy is not None and any(
            p.is_current and version_key(p.key) == self.known.healthy for p in self.points
        )


@dataclass(frozen=True)
class Received:
    """Whether a Slack request is new, or a retry or replay, and what the first one did."""

    first: bool
    outcome: str | None = None

    def repeated(self, what: str) -> str:
        """Say to a person that their repeated request changed nothing."""
        done = self.outcome or "it is still being handled"
        return f"This {what} was already received ({done}); the repeat changed nothing."
