"""The states of runs, steps, re-checks, outbox messages and known versions, as stored.

Each state column is constrained to its enum's values in the database (migration 0011).

str-valued enums: stored values and comparisons with text stay as they were. The
groups below are what the store and the runner select runs by.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """A run's state; str-valued, so stored values and comparisons with text stay as they were.

    requested -> approved -> running -> succeeded | failed
    requested -> rejected | expired | cancelled;  approved -> cancelled
    """

    REQUESTED = "requested"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class StepState(StrEnum):
    """A step record's state, as the runner writes it."""

    PENDING = "pending"
    """Recorded before its first write (`Steps.save` creates the record)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """Started by a runner that stopped mid-step, and not safe to repeat (or not rebuildable)."""
    NOT_RUN = "not run"
    """Could not be rebuilt on resume; never started."""


class OutboxState(StrEnum):
    """An outbox message's state (`bot.execution.outbox`)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    """A later message about the same run says it all; this one was never sent."""


class RunKind(StrEnum):
    """What a run is: a rollback people requested, a drill, or one monitoring requested."""

    ROLLBACK = "rollback"
    DRILL = "drill"
    """Rolls back and forward again (`bot.execution.drill_plans`)."""
    AUTOMATIC = "automatic"
    """Requested by monitoring (`bot.application.monitoring`)."""


class RecheckState(StrEnum):
    """A timed re-check's state (`bot.execution.recheck`)."""

    PENDING = "pending"
    CHECKING = "checking"
    """Claimed by one bot process; due again if its claim runs out (that process died)."""
    DONE = "done"
    DROPPED = "dropped"
    """Not checked: the run did not succeed, or its target left the config."""
    FAILED = "failed"
    """The workload could not be read, attempt after attempt; said in the thread."""


class VersionState(StrEnum):
    """What the bot last learnt about a version of a target (migration 0007)."""

    HEALTHY = "healthy"
    """A rollback to it was verified (health polled, rollout finished), or it was seen healthy."""
    ROLLED_AWAY = "rolled away"
    """A rollback moved away from it: never offered as the default point again."""


ACTIVE_STATES = (RunState.REQUESTED, RunState.APPROVED, RunState.RUNNING)


EXECUTABLE_STATES = (RunState.APPROVED, RunState.RUNNING)


TERMINAL_STATES = (
    RunState.SUCCEEDED,
    RunState.FAILED,
    RunState.REJECTED,
    RunState.EXPIRED,
    RunState.CANCELLED,
)


class TargetBusy(RuntimeError):
    """Another active run holds the target: one active run per (environment, target), kept by
    the `target_locks` primary key."""

    def __init__(self, *, environment: str, target: str, incident_id: str) -> None:
        self.incident_id = incident_id
        super().__init__(
            f"{target} in {environment} is already being rolled back in {incident_id}; "
            "finish or cancel that one first"
        )
