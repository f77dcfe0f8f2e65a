"""Recovery metrics of an incident, from its audit log: time to detect, decide, approve, recover.

Every number is read from what the bot recorded (the `events` table and the
incident row), never from what somebody remembers. The four phases follow one
another, so they add up to the incident's time from first signal to service
restored:

- **detect**: from when the issue was first detected (an alert's `startsAt`, or the
  moment a person opened the form) to the incident being opened;
- **decide**: from the incident opened to the rollback requested (the decision);
- **approve**: from the request to its approval (a person, monitoring after the veto
  window, or break-glass);
- **recover**: from the approval to service restored (the first passing health check
  after it, or the run's success when the environment has no health check).

A phase that has not happened (a rejected request, a failed run) has no duration.
Pure functions: `bot.application.timeline` puts them in the RCA summary,
`bot.application.chart` draws them, `bot.serving.metrics` observes them per environment
and target.
It reads the records as `bot.domain.records` describes them; the newest incidents' phases
are read through `bot.application.reads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.records import EventRecord as Event
from bot.domain.records import IncidentRecord as Incident

PHASES = ("detect", "decide", "approve", "recover")
APPROVED = ("run.approved", "run.auto_approved", "run.break_glass")
PHASE_WORDS = {
    "detect": "Time to detect",
    "decide": "Time to decide",
    "approve": "Time to approve",
    "recover": "Time to recover",
}


@dataclass(frozen=True)
class Phase:
    """One phase of an incident: its name and when it began and ended (None: not reached)."""

    name: str
    start: datetime | None
    end: datetime | None

    @property
    def seconds(self) -> float | None:
        """The phase's duration, when both ends were recorded."""
        if self.start is None or self.end is None:
            return None
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass(frozen=True)
class Recovery:
    """The recovery phases of one incident, in order."""

    incident_id: str
    environment: str
    target: str
    phases: tuple[Phase, ...]

    def seconds(self, name: str) -> float | None:
        """The duration of phase `name` (detect, decide, approve, recover)."""
        return next(p.seconds for p in self.phases if p.name == name)

    @property
    def total_seconds(self) -> float | None:
        """From first detection to service restored, when it was."""
        first, last = self.phases[0].start, self.phases[-1].end
        if first is None or last is None:
            return None
        return max(0.0, (last - first).total_seconds())


def _first(
    events: Sequence[Event], kinds: tuple[str, ...], after: datetime | None
) -> datetime | None:
    if after is None:
        return None
    return next((e.at for e in events if e.kind in kinds and e.at >= after), None)


AFTER_RECOVERY = ("communicate", "keep")
"""Plan phases that run once service is back (people told, the replaced database dumped)."""


def restored_at(events: Sequence[Event], *, after: datetime | None) -> datetime | None:
    """The first passing health check at or after `after`; else, for a run that succeeded,
    the end of its last step before those that run once service is back."""
    if after is None:
        return None
    for event in events:
        name = str(event.detail.get("name", ""))
        if event.kind == "step.succeeded" and "health" in name and event.at >= after:
            return event.at
    succeeded = _first(events, ("run.succeeded",), after)
    if succeeded is None:
        return None
    ends = [
        e.at
        for e in events
        if e.kind in ("step.succeeded", "step.skipped")
        and after <= e.at <= succeeded
        and e.detail.get("phase") not in AFTER_RECOVERY
    ]
    return max(ends, default=succeeded)


def recovery(incident: Incident, events: Sequence[Event]) -> Recovery:
    """Measure the incident's phases from its events."""
    detected = incident.detected_at or incident.created_at
    opened = _first(events, ("incident.opened",), detected) or incident.created_at
    requested = _first(events, ("run.requested",), opened)
    approved = _first(events, APPROVED, requested)
    restored = restored_at(events, after=approved)
    phases = (
        Phase("detect", detected, opened),
        Phase("decide", opened, requested),
        Phase("approve", requested, approved),
        Phase("recover", approved, restored),
    )
    return Recovery(incident.id, incident.environment, incident.target, phases)


def spoken(seconds: float | None) -> str:
    """Say a duration for people: `45 s`, `1 m 12 s`, `2 h 05 m`, `3 d 4 h`; `n/a` when unknown."""
    if seconds is None:
        return "n/a"
    whole = round(seconds)
    if whole < 60:
        return f"{max(whole, 0)} s"
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} m"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def summary_lines(rec: Recovery) -> list[str]:
    """The RCA summary's recovery lines (markdown list items)."""
    lines = [f"- **{PHASE_WORDS[p.name]}**: {spoken(p.seconds)}" for p in rec.phases]
    lines.append(f"- **Detection to service restored**: {spoken(rec.total_seconds)}")
    return lines
