"""The step's voice: what a wait deep below an action says to the incident thread.

The runner puts the step's `emit` in a context variable around `Action.run`
(`speaking_to`); a wait that has no StepContext at hand (a child process, WAL replay in a
scratch instance, a cloud API's polling) says how it is getting on with `say`, at most every
`SAY_SECONDS` (`Cadence`), so no step is silent for longer than that: the thread's progress
line is edited with the latest line (handlers.progress.SlackProgress). Outside a step nobody
listens and `say` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SAY_SECONDS = 10.0
"""How often a long wait says where it stands (the thread's line moves at least every 15 s)."""

_SAY: ContextVar[Callable[[str], None] | None] = ContextVar("rollback_bot_say", default=None)


@contextmanager
def speaking_to(emit: Callable[[str], None]) -> Iterator[None]:
    """Make `emit` (the step's) hear what waits below the action say."""
    token = _SAY.set(emit)
    try:
        yield
    finally:
        _SAY.reset(token)


def say(line: str) -> None:
    """Tell the running step's thread `line`; nothing outside a step."""
    emit = _SAY.get()
    if emit is not None:
        emit(line)


class Cadence:
    """Says when a wait begun at `started` is due to speak again (every SAY_SECONDS)."""

    def __init__(self, started: float | None = None) -> None:
        self._last = time.monotonic() if started is None else started

    def due(self) -> bool:
        """True at most once every SAY_SECONDS, the first time SAY_SECONDS after the start."""
        now = time.monotonic()
        if now - self._last < SAY_SECONDS:
            return False
        self._last = now
        return True
