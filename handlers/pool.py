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
refused and failed, and how long tasks waited for a thread, for /metrics.
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
    waited_seconds: float = 0.0


class Later:
    """A bounded pool that runs listener work after the ack, off Slack's answering threads."""

    NOTICES = 100

    def __init__(self, *, threads: int = 8, queue: int = 256) -> None:
        if threads < 1 or queue < 1:
            raise ValueError("Later needs at least one thread and room for one queued task")
        self.threads, self.queue = threads, queue
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
        **kwargs: Any,
    ) -> bool:
        """Run `fn(*args, **kwargs)` on the pool; False (and nothing run) when it is full."""
        with self._lock:
            if self.stats.queued + self.stats.running >= self.threads + self.queue:
                self.stats.refused += 1
                return False
            self.stats.queued += 1
        submitted = time.monotonic()
        self._pool.submit(self._run, fn, args, kwargs, on_error, submitted)
        return True

    def _run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_error: Callable[[str], None] | None,
        submitted: float,
    ) -> None:
        with self._lock:
            self.stats.queued -= 1
            self.stats.running += 1
            self.stats.waited_seconds += time.monotonic() - submitted
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
                self.stats.running -= 1
                self.stats.done += 1
                self.stats.failed += failed

    def snapshot(self) -> LaterStats:
        """A copy of the counters, taken under the lock."""
        with self._lock:
            return LaterStats(**vars(self.stats))

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking work; with `wait`, let queued and running tasks finish."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self._notices.shutdown(wait=wait, cancel_futures=not wait)


def _quietly(on_error: Callable[[str], None], ref: str) -> None:
    try:
        on_error(ref)
    except Exception:
        log.exception("could not tell the person about failure %s", ref)
