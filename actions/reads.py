"""One person's request's view of the live systems: within a `Reads`, the same read is made once.

Rendering the rollback modal lists the rollback points, then runs the checks,
and each read the Deployment and its ReplicaSets again; approving rebuilds
the plan, which reads the workload, its workers and their owners, some more
than once. A person's click is answered from one view of the target, so the
planner makes a `Reads` for the work of one request (`bot.execution.planner.Planner.request`)
and hands it to the targets that take one (`ReadsThrough.reading`); a target
sends each read once through it and hands the same answer to later readers.
A write through it empties it, so a read after a change reads again. Once the
request ends (`close`), a step that kept the target reads live every time: a
rollout's health polling never sees an answer from the approval.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

T = TypeVar("T")


class Reads:
    """The reads one request made, each made once until something is written or it closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memory: dict[Hashable, Any] = {}
        self._open = True

    def read(self, key: Hashable, read: Callable[[], T]) -> T:
        """`read()` once per `key` while open; every time once closed."""
        with self._lock:
            if self._open and key in self._memory:
                found: T = self._memory[key]
                return found
        value = read()
        with self._lock:
            if self._open:
                self._memory[key] = value
        return value

    def changed(self) -> None:
        """Something was written: reads after this read again."""
        with self._lock:
            self._memory.clear()

    def close(self) -> None:
        """The request ended: remember nothing more, forget what was read."""
        with self._lock:
            self._open = False
            self._memory.clear()


@runtime_checkable
class ReadsThrough(Protocol):
    """A target that can read through a request's `Reads`."""

    def reading(self, reads: Reads) -> Self:
        """This target, its reads made once through `reads`."""
        ...
