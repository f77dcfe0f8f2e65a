"""The bot's own bounded pool for what Slack listeners do after their ack.

See handlers/lazy.py for why it exists. It is a module of its own, importing
nothing of the handlers, so `handlers.deps.Deps` can hold one.

When the queue is full, `submit` refuses (returns False) instead of
queueing without bound: the caller tells the person the bot is busy and
nothing was done, in the ack where the ack can carry text (`has_room` before
acking), else through `notify`: one thread of its own, at most `NOTICES`
waiting, so telling never holds the thread that answers Slack and a flood of
refusals cannot grow without bound either. A task that raises is logged with a correlation id and
`on_error(ref)` tells the person (as Bolt's app-wide error handler would
have). `snapshot()` counts what is queued and running, what was done,
refused, failed and expired, and how long tasks waited for a thread, for /metrics.

What a person is told is what happens: a task still queued `deadline`
seconds after its ack never runs. A thread that takes it then drops it for
good, and only then is the person told nothing was done (`on_expired`, else
`on_error`): a click made while the pool was stuck cannot be told "nothing was
done" and applied later. A task that started runs to its end (a thread
cannot be stopped from outside); one running longer than `stuck_after` makes
`stuck()` say so, and the process's liveness probe fails on it
(bot/app.py), so the platform restarts a process whose work is hung.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def _reference() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class LaterStats:
    """What the pool did so far (counters only grow; `queued` and `running` are current)."""

    queued: int = 0
    running: int = 0
    done: int = 0
    refused: int = 0
    failed: int = 0
    expired: int = 0
    waited_seconds: float = 0.0


class Later:
    """A bounded pool that runs listener work after the ack, off Slack's answering threads."""

    NOTICES = 100

    def __init__(
        self,
        *,
        threads: int = 8,
        queue: int = 256,
        deadline: float = 20.0,
        stuck_after: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threads < 1 or queue < 1:
            raise ValueError("Later needs at least one thread and room for one queued task")
        self.threads, self.queue = threads, queue
        self.deadline, self.stuck_after, self._clock = deadline, stuck_after, clock
        self._started: dict[int, float] = {}  # running task -> when it started
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="later")
        self._notices = ThreadPoolExecutor(max_workers=1, thread_name_prefix="later-notice")
        self._waiting_notices = 0
        self._lock = threading.Lock()
        self.stats = LaterStats()

    def has_room(self) -> bool:
        """Whether `submit` would take a task now (another request may take the room first)."""
        with self._lock:
            return self.stats.queued + self.stats.running < self.threads + self.queue

    def notify(self, fn: Callable[..., Any], /, *args: Any) -> bool:
        """Run `fn(*args)` (telling a person something) on the notice thread; False if full."""
        with self._lock:
            if self._waiting_notices >= self.NOTICES:
                log.warning("too many notices waiting; dropped one")
                return False
            self._waiting_notices += 1
        self._notices.submit(self._notice, fn, args)
        return True

    def _notice(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with self._lock:
            self._waiting_notices -= 1
        try:
            fn(*args)
        except Exception:
            log.exception("telling a person failed")

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        on_error: Callable[[str], None] | None = None,
        on_expired: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Run `fn(*args, **kwargs)` on the pool within `deadline`; False (and nothing run)
        when it is full. A task not started by then never runs: `on_expired()` (or
        `on_error(ref)`) is called instead, after it is dropped."""
        with self._lock:
            if self.stats.queued + self.stats.running >= self.threads + self.queue:
                self.stats.refused += 1
                return False
            self.stats.queued += 1
        task = _Task(fn, args, kwargs, on_error, on_expired, submitted=self._clock())
        self._pool.submit(self._run, task)
        return True

    def _run(self, task: _Task) -> None:
        now = self._clock()
        with self._lock:
            self.stats.queued -= 1
            self.stats.waited_seconds += now - task.submitted
            late = now - task.submitted > self.deadline
            if late:
                self.stats.expired += 1
            else:
                self.stats.running += 1
                self._started[id(task)] = now
        if late:  # dropped for good above; only now is the person told
            self._expired(task)
            return
        fn, args, kwargs, on_error = task.fn, task.args, task.kwargs, task.on_error
        failed = False
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            failed = True
            ref = _reference()
            log.error("work after the ack failed [%s]: %s", ref, exc, exc_info=exc)
            if on_error is not None:
                _quietly(on_error, ref)
        finally:
            with self._lock:
                del self._started[id(task)]
                self.stats.running -= 1
                self.stats.done += 1
                self.stats.failed += failed

    def _expired(self, task: _Task) -> None:
        ref = _reference()
        log.error(
            "work after the ack waited past its %.0fs deadline and was dropped [%s]",
            self.deadline,
            ref,
        )
        told = task.on_expired
        if told is not None:
            _quietly(lambda _ref: told(), ref)
        elif task.on_error is not None:
            _quietly(task.on_error, ref)

    def stuck(self) -> str | None:
        """Say why the pool is stuck (a task running longer than `stuck_after`), or None."""
        now = self._clock()
        with self._lock:
            oldest = min(self._started.values(), default=now)
        if now - oldest > self.stuck_after:
            return f"a task after the ack has been running for {now - oldest:.0f}s"
        return None

    def snapshot(self) -> LaterStats:
        """A copy of the counters, taken under the lock."""
        with self._lock:
            return LaterStats(**vars(self.stats))

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking work; with `wait`, let queued and running tasks finish."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self._notices.shutdown(wait=wait, cancel_futures=not wait)


@dataclass
class _Task:
    """One task handed to the pool, and when."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    on_error: Callable[[str], None] | None
    on_expired: Callable[[], None] | None
    submitted: float


def _quietly(on_error: Callable[[str], None], ref: str) -> None:
    try:
        on_error(ref)
    except Exception:
        log.exception("could not tell the person about failure %s", ref)
