"""The runner's Progress in Slack: wake the outbox's sender, and let long steps be heard.

Everything the runner reports goes through the outbox (`bot.execution.outbox`): the store
queues a message with each state change and the sender renders it (`handlers.outbox`).
`SlackProgress` is then only a producer's nudge: it wakes the sender.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.domain.records import RunRecord, StepView
from bot.execution.progress import Progress

log = logging.getLogger(__name__)


LIVE_EVERY = 10.0
"""Seconds between live updates of a running step (Slack allows about one chat.update a
second per channel: https://api.slack.com/methods/chat.update#rate_limiting)."""


@dataclass
class _Live:
    started: float
    sent: float
    lines: int = 0


class SlackProgress(Progress):
    """The runner's Progress: the store already queued each message; wake the sender.

    With a queue (the outbox's `enqueue`), a long step's output lines also reach people: at
    most every `every` seconds a `step.progress` message is queued with the step's last line,
    how long it has run and how many readings it made, and the sender edits the progress
    message.
    """

    def __init__(
        self,
        wake: threading.Event,
        queue: Callable[[str, str, dict[str, Any]], object] | None = None,
        *,
        every: float = LIVE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wake = wake
        self.queue = queue
        self.every = every
        self.clock = clock
        self._live: dict[tuple[str, int], _Live] = {}
        self._lock = threading.Lock()

    def run_started(self, run: RunRecord, *, resumed: bool) -> None:
        self.wake.set()

    def step_started(self, run: RunRecord, step: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._live[(run.id, int(step["position"]))] = _Live(started=now, sent=now)
        self.wake.set()

    def step_output(self, run: RunRecord, step: dict[str, Any], line: str) -> None:
        log.info("%s: %s: %s", run.incident_id, step["name"], line)
        if self.queue is None:
            return
        now = self.clock()
        key = (run.id, int(step["position"]))
        with self._lock:
            live = self._live.setdefault(key, _Live(started=now, sent=now))
            live.lines += 1
            if now - live.sent < self.every:
                return
            live.sent = now
            detail = {
                "position": key[1],
                "line": line[:300],
                "elapsed": round(now - live.started, 1),
                "readings": live.lines,
            }
        self.queue(run.id, "step.progress", detail)
        self.wake.set()

    def step_finished(self, run: RunRecord, step: dict[str, Any], record: StepView) -> None:
        with self._lock:
            self._live.pop((run.id, int(step["position"])), None)
        self.wake.set()

    def run_finished(self, run: RunRecord) -> None:
        self.wake.set()

    def run_expired(self, run: RunRecord) -> None:
        self.wake.set()
