"""Every message to people goes through a durable outbox, delivered by its own sender.

Why: a rollback must never wait on, or fail because of, Slack. A 429, a 500, a
dropped connection or a stalled call in the middle of a run would surface in
the runner's thread, so the runner only writes rows.

- Producing: a state change that people should hear about enqueues a message
  (`run.started`, `run.resumed`, `step.started`, `step.finished`,
  `run.finished`, `run.expired`) in the same transaction as the change itself
  (`Runs.transition(notify=...)`, `Steps.save(notify=...)`), so a crash
  can never record a change and lose its message, or the other way round.
  Messages hold only what identifies them (run, kind, step position); the
  Slack side renders them from the database when it delivers, so an edit
  always shows the newest state.
- Delivering: `Sender` takes the oldest pending message of each run (only the
  head of a thread, so a thread's messages arrive in order, and a stuck thread
  does not hold the others), calls `deliver`, and marks it sent. A delivery
  that raises `RetryLater` (rate limit with Retry-After, server error, dropped
  connection, timeout) stays pending with exponential backoff; `Undeliverable`
  (the channel is gone, the bot was removed) is marked failed with the reason
  and logged, because retrying cannot help. Unexpected errors are retried with
  backoff too, never dropped silently.
- Several bot processes: a sender takes a message with a conditional UPDATE
  (`Outbox.claim`) before delivering it, so two senders never deliver the
  same message; one that dies mid-delivery leaves it due again after a while.
- Exactly once: every message the Slack side posts has a slot (`progress`,
  `step:3:1`, `checklist`) whose ts is recorded as soon as Slack answers;
  delivering again after a crash edits the message of that slot instead of
  posting another. Only a post whose answer was lost in transit (Slack took it,
  the connection dropped before the ts reached us) can still appear twice.
- A `step.started` message that already failed once and is followed by a newer
  message of the same run is superseded without a call: the newer one re-renders
  the same progress message, so a thread catching up after an outage makes
  fewer calls. While Slack answers, every edit is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from bot.persistence.models import OutboxMessage
from bot.persistence.store import Store

log = logging.getLogger(__name__)

SUPERSEDABLE = ("step.started",)


class RetryLater(Exception):
    """Delivery failed for now (rate limit, server error, dropped connection, timeout)."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Undeliverable(Exception):
    """Delivery can never succeed (no thread, channel gone, bot removed); say why."""


Deliver = Callable[[OutboxMessage], None]


@dataclass
class Sender:
    """Delivers pending outbox messages, in order per run, with retries and backoff."""

    store: Store
    deliver: Deliver
    base_delay: float = 1.0
    max_delay: float = 300.0
    claim_seconds: float = 120.0
    """How long a message taken for delivery stays this sender's (a crash mid-call frees it)."""
    wake: threading.Event = field(default_factory=threading.Event)

    def deliver_due(self) -> int:
        """Deliver the head of every thread that is due; return how many left the queue."""
        delivered = 0
        now = self.store.clock()
        for message in self.store.outbox.heads():
            if message.next_attempt_at is not None and message.next_attempt_at > now:
                continue
            if (
                message.kind in SUPERSEDABLE
                and message.attempts > 0
                and self.store.outbox.has_later(message)
            ):
                self.store.outbox.done(message.id, state="superseded")
                delivered += 1
                continue
            if not self.store.outbox.claim(message, seconds=self.claim_seconds):
                continue
            delivered += self._deliver_one(message)
        return delivered

    def _deliver_one(self, message: OutboxMessage) -> int:
        try:
            self.deliver(message)
        except RetryLater as exc:
            self._retry(message, str(exc), exc.delay)
            return 0
        except Undeliverable as exc:
            log.error(
                "run %s: %s message %s cannot be delivered: %s",
                message.run_id,
                message.kind,
                message.id,
                exc,
            )
            self.store.outbox.done(message.id, state="failed", error=str(exc))
            return 1
        except Exception as exc:
            log.exception("run %s: delivering %s failed unexpectedly", message.run_id, message.kind)
            self._retry(message, f"{type(exc).__name__}: {exc}", None)
            return 0
        self.store.outbox.done(message.id, state="sent")
        return 1

    def _retry(self, message: OutboxMessage, reason: str, delay: float | None) -> None:
        backoff = min(self.max_delay, self.base_delay * 2 ** min(message.attempts, 16))
        wait = max(delay or 0.0, backoff if delay is None else 0.0)
        log.warning(
            "run %s: %s message %s not delivered (%s); trying again in %.1fs",
            message.run_id,
            message.kind,
            message.id,
            reason,
            wait,
        )
        self.store.outbox.retry(
            message.id, at=self.store.clock() + timedelta(seconds=wait), error=reason
        )

    def drain(self, *, rounds: int = 1000) -> None:
        """Deliver until nothing is due (tests, shutdown); bounded by `rounds`."""
        for _ in range(rounds):
            if not self.deliver_due():
                return

    def serve(self, stop: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Deliver until `stop` is set; `wake` is set by producers for prompt delivery."""
        while not stop.is_set():
            try:
                if self.deliver_due():
                    continue
            except Exception:
                log.exception("outbox pass failed; trying again in %.0fs", poll_seconds)
            self.wake.wait(poll_seconds)
            self.wake.clear()
