"""What the runner reports as it goes: the protocol the Slack layer implements.

The runner never talks to Slack; each state change queues its message in the outbox
(`bot.execution.outbox`), and a `Progress` only nudges.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.persistence.models import Run
from bot.persistence.store import StepView


class Progress(Protocol):
    """What the runner reports as it goes; the Slack layer implements it."""

    def run_started(self, run: Run, *, resumed: bool) -> None: ...

    def step_started(self, run: Run, step: dict[str, Any]) -> None: ...

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None: ...

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None: ...

    def run_finished(self, run: Run) -> None: ...

    def run_expired(self, run: Run) -> None: ...


class NullProgress:
    """Report nothing."""

    def run_started(self, run: Run, *, resumed: bool) -> None:
        return None

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        return None

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None:
        return None

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        return None

    def run_finished(self, run: Run) -> None:
        return None

    def run_expired(self, run: Run) -> None:
        return None
