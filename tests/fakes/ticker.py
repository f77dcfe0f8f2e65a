"""A clock tests move: time passes only when a step sleeps on it (`actions.clock.Ticker`).

Each sleep advances the virtual clock by what was asked, waits a small fraction of it for
real, and then until `settle` says the world around the step has caught up (the outbox's
sender has delivered what the step queued), so what a test observes does not depend on
how loaded the machine is: a 60 s health poll takes about a second of wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class FakeTicker:
    """Virtual monotonic seconds, advanced by `sleep` (and by `advance`)."""

    def __init__(self, *, real_share: float = 0.02, start: float = 1000.0) -> None:
        self._now = start
        self._real_share = real_share
        self._lock = threading.Lock()
        self.settle: Callable[[], None] = lambda: None
        """Called after each sleep; returns once the threads around the step caught up."""

    def monotonic(self) -> float:
        """Return the virtual time."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the virtual time by `seconds`; wait `real_share` of it for real."""
        self.advance(seconds)
        time.sleep(max(0.0, seconds) * self._real_share)
        self.settle()

    def advance(self, seconds: float) -> None:
        """Move the virtual time on by `seconds`."""
        with self._lock:
            self._now += max(0.0, seconds)
