"""One request's view of the live systems: inside `read_once()`, the same read is made once.

Rendering the rollback modal lists the rollback points, then runs the checks,
and each read the Deployment and its ReplicaSets again; approving rebuilds
the plan, which reads the workload, its workers and their owners, some more
than once (issue 16, point 3). A person's click is answered from one view of
the target, so the bot opens `read_once()` around the work of one request
(`bot.plans.Planner.request`): a client that takes part (the Kubernetes
client, `actions.kubernetes.client`) sends each GET once within it and hands
the same answer to later readers. A write in the scope empties it, so a read
after a change reads again. The scope is a context variable: it is the
current thread's only, and nothing outside a scope is remembered.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
_scope: ContextVar[dict[Hashable, Any] | None] = ContextVar("actions_reads", default=None)


@contextmanager
def read_once() -> Iterator[None]:
    """Within this block, remember reads (an enclosing block's memory is kept and shared)."""
    if _scope.get() is not None:
        yield
        return
    token = _scope.set({})
    try:
        yield
    finally:
        _scope.reset(token)


def remembered(key: Hashable, read: Callable[[], T]) -> T:
    """`read()` once per `key` inside `read_once()`; every time outside it."""
    memory = _scope.get()
    if memory is None:
        return read()
    if key not in memory:
        memory[key] = read()
    value: T = memory[key]
    return value


def changed() -> None:
    """Something was written: reads after this in the scope read again."""
    memory = _scope.get()
    if memory is not None:
        memory.clear()
