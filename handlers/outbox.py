"""Outbox messages rendered into the incident thread: `SlackOutbox.deliver`.

Everything the runner reports goes through the outbox (`bot.execution.outbox`): the store
queues a message with each state change, and `SlackOutbox.deliver`, called by the outbox's
sender thread, renders it from the database and makes the calls with
`IncidentThread(strict=True)`, which raises `RetryLater` / `Undeliverable` instead of
swallowing, so the sender retries with backoff and a Slack outage never touches the rollback.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.application.requests import NOTICE
from bot.domain.records import OutboxRecord, RunRecord
from bot.execution.outbox import RetryLater, Undeliverable
from handlers.delivery import delivery_error
from handlers.deps import Deps
from handlers.thread import IncidentThread

OPENING = timedelta(minutes=5)
"""How long a run's thread may take to be opened (Slack's retries included) before its
messages are given up as undeliverable."""


def _notice(thread: IncidentThread, message: OutboxRecord) -> None:
    """Tell one person something by direct message (`bot.application.flows.NOTICE`)."""
    detail = message.detail
    try:
        thread.client.chat_postMessage(channel=detail["user"], text=detail["text"])
    except (SlackApiError, OSError, http.client.HTTPException) as exc:
        raise delivery_error("chat_postMessage", exc) from exc


class SlackOutbox:
    """Renders outbox messages into the incident thread; the outbox's sender calls `deliver`."""

    def __init__(
        self,
        deps: Deps,
        *,
        more: dict[str, Callable[[IncidentThread, RunRecord, OutboxRecord], None]] | None = None,
        alone: dict[str, Callable[[IncidentThread, OutboxRecord], None]] | None = None,
    ) -> None:
        self.deps = deps
        self.thread = IncidentThread(deps, strict=True)
        self.more = dict(more or {})
        """Kinds other modules render (handlers/gitops.py); for a kind of this one's, after it."""
        self.alone = {NOTICE: _notice, **(alone or {})}
        """Kinds said without a run's thread, whether or not they belong to a run: a notice
        to one person, and other modules' (handlers/drills.py)."""
        self.told = IncidentThread(deps)  # an error is said in the thread, as to a click

    def deliver(self, message: OutboxRecord) -> None:
        """Make the Slack calls for one message, or raise RetryLater / Undeliverable."""
        alone = self.alone.get(message.kind)
        if alone is not None:  # said to a person or a channel, whether or not of a run
            alone(self.thread, message)
            return
        if message.run_id is None:
            raise Undeliverable(f"a {message.kind} message must belong to a run")
        run = self.deps.reads.run(message.run_id)
        if run is None:
            raise Undeliverable(f"run {message.run_id} no longer exists")
        if not run.slack:
            self._no_thread_yet(run)
        kind = message.kind
        if not kind.startswith("step."):
            self.deps.home.changed.set()  # a run's state changed: refresh home tabs
        render = self._renders().get(kind)
        if render is None and kind not in self.more:
            raise Undeliverable(f"unknown message kind {kind}")
        if render is not None:
            render(run, message)
        if kind in self.more:
            self.more[kind](self.thread, run, message)

    def _no_thread_yet(self, run: RunRecord) -> None:
        """A run's message queued while its thread is being opened waits for the thread
        (RetryLater); one whose thread will never be (its opening failed and closed the
        incident, or it was not opened within `OPENING`) is Undeliverable."""
        incident = self.deps.reads.incident(run.incident_id)
        age = self.deps.reads.now() - run.created_at
        if incident is not None and incident.resolved_at is None and age < OPENING:
            raise RetryLater(f"{run.incident_id}'s thread is being opened", delay=1.0)
        raise Undeliverable(f"{run.incident_id} has no Slack thread to report in")

    def _renders(self) -> dict[str, Callable[[RunRecord, OutboxRecord], None]]:
        """This module's kinds and how each is said in the thread."""
        return {
            "run.started": self._started,
            "run.resumed": self._started,
            # bot.application.flows.CHANGED, after a click: told as a click is
            "run.changed": lambda run, _: self.told.refresh(run.id),
            # bot.application.flows.DECIDED, after Retry or a maintenance choice
            "run.decided": lambda run, _: self.told.decided(run.id),
            "step.started": lambda run, _: self.thread.progress(run),
            "step.progress": lambda run, m: self.thread.progress(run, live=m.detail),
            "step.finished": lambda run, m: self._step_finished(run, m.detail),
            "run.finished": lambda run, _: self.thread.finished(run),
            "run.lease_lost": self._lease_lost,
            "run.expired": self._expired,
        }

    def _started(self, run: RunRecord, message: OutboxRecord) -> None:
        self.thread.refresh(run.id)
        if message.kind == "run.resumed":
            self.thread.say(run, _resumed_text(message.detail), slot=f"resumed:{message.id}")
        self.thread.progress(run)

    def _lease_lost(self, run: RunRecord, message: OutboxRecord) -> None:
        self.thread.say(
            run,
            f":warning: `{message.detail.get('owner')}` lost its hold on this rollback "
            "(its database connection failed or was too slow) and stopped at a safe "
            "point; another bot process takes over from the approved plan.",
            slot=f"lease_lost:{message.id}",
        )

    def _expired(self, run: RunRecord, message: OutboxRecord) -> None:
        self.thread.refresh(run.id)
        self.thread.say(
            run,
            ":alarm_clock: The approval request expired; nothing was changed. "
            "Request the rollback again if it is still needed.",
            slot="expired",
        )

    def _step_finished(self, run: RunRecord, detail: dict[str, Any]) -> None:
        self.thread.progress(run)
        position = int(detail["position"])
        record = next((r for r in self.deps.reads.steps(run.id) if r.position == position), None)
        step = next((s for s in run.plan if s["position"] == position), None)
        if record is None or step is None:
            return
        slot = f"step:{position}:{detail.get('attempts', record.attempts)}"
        if record.state == "failed":  # a failure gets its own reply; the rest is folded
            self.thread.step_output(run, step, record, slot=slot)
        else:
            self.thread.attach_long_output(run, step, record, slot=slot)


def _resumed_text(detail: dict[str, Any]) -> str:
    by = detail.get("by") or "another bot process"
    before = detail.get("previous_owner")
    stopped = f"`{before}`" if before else "The bot process running this rollback"
    return (
        f":arrows_counterclockwise: {stopped} stopped (crash, restart or lost lease); "
        f"`{by}` resumed the rollback from the approved plan, without planning again."
    )
