"""What a failed run left behind, and what people may do next: retry, or decide on maintenance.

A failed rollback is announced loudly with three ways on:

- **Retry failed step** re-runs the stored, approved plan from the step that failed. The
  steps before it that succeeded are not repeated, except those an `always` step has
  undone on the failure path: when maintenance was turned off again, maintenance goes on
  again first; when the workers were started again, they are stopped again first. So a
  retried rollback step runs under the same conditions as it was approved for.
- **Re-plan** opens the form again (the world changed: a new plan, a new approval).
- **Leave maintenance on** / **Turn maintenance off**, only where the failure left
  maintenance on: the request asked for it ("leave maintenance on if the rollback
  fails", which makes the plan's maintenance-off step not `always`), or the
  maintenance-off step itself failed. Leaving it on is a decision recorded with who made
  it; turning it off runs the plan's own maintenance-off request now. Where the failure
  path already turned maintenance off, neither is offered: there is nothing to decide.

Everything here is pure: the stored steps, their records and the incident's events in,
facts out. `bot.application.flows` acts on them, `handlers` renders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.plans import StoredStep
from bot.domain.records import EventRecord as Event
from bot.domain.records import StepView
from bot.domain.states import StepState

LEFT_ON = "maintenance.left_on"
TURNED_OFF = "maintenance.turned_off"
RESOLVED = "run.resolved"
"""A person marked a failed run resolved: it leaves status and App Home, and its incident
counts as recovered then."""
RETRIED = "run.retry"
DONE = (StepState.SUCCEEDED, StepState.SKIPPED)
BROKEN = (StepState.FAILED, StepState.INTERRUPTED, StepState.NOT_RUN)
ON, OFF = "http.maintenance_on", "http.maintenance_off"


@dataclass(frozen=True)
class Aftermath:
    """Where a failed run left things that people decide on."""

    failed: StoredStep | None
    """The first step that failed (or was interrupted, or could not be rebuilt)."""
    maintenance_on: bool
    """The failure left maintenance mode on, and nobody has turned it off since."""
    left_on_by: str | None = None
    turned_off_by: str | None = None
    resolved_by: str | None = None
    """Who marked the failure resolved (`Flows.resolve`); None: it still needs someone."""
    resolved_at: datetime | None = None

    @property
    def maintenance_decision(self) -> bool:
        """Whether the maintenance buttons apply (maintenance is on, or a person just acted)."""
        return self.maintenance_on or self.turned_off_by is not None


def steps_of(plan: Sequence[dict[str, Any]]) -> list[StoredStep]:
    """The run's approved steps, typed."""
    return [StoredStep.from_json(raw) for raw in plan]


def aftermath(
    plan: Sequence[dict[str, Any]],
    records: Sequence[StepView],
    events: Sequence[Event],
    run_id: str,
) -> Aftermath:
    """Read what the last attempt of a run left, and what people decided since it ended."""
    steps = steps_of(plan)
    state = {r.position: r.state for r in records}
    failed = next((s for s in steps if state.get(s.position) in BROKEN), None)
    mine = [e for e in events if e.run_id == run_id]
    ended = max((i for i, e in enumerate(mine) if e.kind == "run.failed"), default=-1)
    since = mine[ended + 1 :]
    turned_off = next((e.actor for e in reversed(since) if e.kind == TURNED_OFF), None)
    left_on = next((e.actor for e in reversed(since) if e.kind == LEFT_ON), None)
    resolved = next((e for e in reversed(since) if e.kind == RESOLVED), None)
    on = any(s.name == ON and state.get(s.position) in DONE for s in steps)
    off = any(s.name == OFF and state.get(s.position) in DONE for s in steps)
    return Aftermath(
        failed=failed,
        maintenance_on=on and not off and turned_off is None,
        left_on_by=left_on,
        turned_off_by=turned_off,
        resolved_by=resolved.actor if resolved is not None else None,
        resolved_at=resolved.at if resolved is not None else None,
    )


def retry_positions(
    plan: Sequence[dict[str, Any]], records: Sequence[StepView], *, maintenance_on: bool
) -> list[int]:
    """The steps a retry runs again: the failed one and all after it, and before it those an
    `always` step after it undid on the failure path (maintenance on, workers stopped)."""
    steps = steps_of(plan)
    state = {r.position: r.state for r in records}
    failed = next((s for s in steps if state.get(s.position) in BROKEN), None)
    if failed is None:
        return []
    again = {s.position for s in steps if s.position >= failed.position}
    before = [s for s in steps if s.position < failed.position and state.get(s.position) in DONE]
    # Maintenance goes on again only where the retry also reaches the step that turns it off:
    # a failure after that (a status page, the kept dump) is retried with the site up.
    if not maintenance_on and any(s.name == OFF and s.position in again for s in steps):
        again |= {s.position for s in before if s.name == ON}
    restarted = {
        s.source
        for s in steps
        if s.phase == "resume" and s.position > failed.position and state.get(s.position) in DONE
    }
    again |= {s.position for s in before if s.phase == "prepare" and s.source in restarted}
    return sorted(again)
