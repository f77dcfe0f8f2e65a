"""Time helpers shared by the targets: the current UTC time and how long ago something was.

Rollback point labels in the modal show ages one way (`3d ago`, `5h ago`,
`12m ago`, `40s ago`) whether the point is a Docker image or a Kubernetes
revision, so the wording lives here once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

UNITS = (("d", 86400), ("h", 3600), ("m", 60))


class Ticker(Protocol):
    """The monotonic time a step runs on, and its way of waiting.

    Steps and the runner take one, so a test can run a 60 s health poll on a clock it
    moves itself (`tests/fakes/ticker.py`) instead of waiting a minute.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` on that clock."""
        ...


class SystemTicker:
    """The real monotonic clock and `time.sleep`."""

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Call `time.sleep`."""
        time.sleep(seconds)


SYSTEM = SystemTicker()


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def ago(then: datetime | None, now: datetime) -> str:
    """Say how long before `now` `then` was, in its largest whole unit (`3d ago`)."""
    if then is None:
        return "age unknown"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in UNITS:
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
