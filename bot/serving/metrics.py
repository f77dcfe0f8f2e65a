"""Prometheus metrics for the bot itself, served at GET /metrics.

One `BotMetrics` per `BotProcess`, each with its own `CollectorRegistry` (no
module-level registry: tests run several bots in one process). The numbers
come from the edges the composition root already owns, so the runner, the
store and the handlers need not know about metrics:

- incidents opened: an ORM `after_insert` listener on `Incident`, filtered to
  this process's engine (every use case that opens one, Slack or monitoring);
- runs by outcome, step durations by action, approval-to-healthy time: a
  `Progress` wrapper around the runner's progress reporter (`MeteredProgress`);
- Slack API calls and errors by method: the Web API client (bot/app.py);
- ack latency: the time the WSGI route for /slack/events takes (Bolt acks
  before the listener's work when `process_before_response` is off);
- approvals waiting and the outbox backlog: read from the store at scrape time;
- lease losses: an ORM `after_insert` listener on the audit `Event` of kind
  `run.lease_lost`, which the runner records when it stops for a successor;
- recovery phases (`bot.domain.recovery`): when a run ends, its incident's time to detect,
  decide, approve and recover, read from the audit log, observed per environment and
  target in `rollback_recovery_phase_seconds{phase=…}` (drills excluded); a drill's
  measured time to recover sets `rollback_drill_recover_seconds` for its target.

The counters count what this process saw; with several replicas, sum them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bot.application.drills import SOURCE as DRILL_SOURCE
from bot.domain.recovery import recovery
from bot.execution.progress import Progress
from bot.logs import step_context
from bot.persistence.models import Event, Incident, Run
from bot.persistence.store import StepView, Store

STEP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RECOVERY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 86400)
ACK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10)


class BotMetrics:
    """The bot's Prometheus series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.incidents = Counter(
            "rollback_incidents_opened",
            "Incidents opened, by source (slack, monitoring) and severity",
            ["source", "severity"],
            registry=r,
        )
        self.runs = Counter(
            "rollback_runs_finished", "Runs finished, by outcome", ["outcome"], registry=r
        )
        self.steps = Histogram(
            "rollback_step_duration_seconds",
            "How long each step took, by action",
            ["action"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.to_healthy = Histogram(
            "rollback_approval_to_healthy_seconds",
            "From approval to a succeeded run (the site healthy again)",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.waiting = Gauge(
            "rollback_approvals_waiting", "Runs waiting for an approval", registry=r
        )
        self.slack_calls = Counter(
            "rollback_slack_api_calls", "Slack Web API calls, by method", ["method"], registry=r
        )
        self.slack_errors = Counter(
            "rollback_slack_api_errors",
            "Slack Web API calls that failed, by method",
            ["method"],
            registry=r,
        )
        self.lease_losses = Counter(
            "rollback_lease_losses", "Runs whose lease this process lost", registry=r
        )
        self.outbox = Gauge(
            "rollback_outbox_backlog",
            "Messages to people queued and not yet delivered to Slack",
            registry=r,
        )
        self.recovery = Histogram(
            "rollback_recovery_phase_seconds",
            "Per incident: time to detect, decide, approve and recover (phase), from the audit "
            "log, by environment and target",
            ["phase", "environment", "target"],
            buckets=RECOVERY_BUCKETS,
            registry=r,
        )
        self.drill_recover = Gauge(
            "rollback_drill_recover_seconds",
            "Time to recover measured by the target's last drill that recovered",
            ["environment", "target"],
            registry=r,
        )
        self.ack = Histogram(
            "rollback_slack_request_seconds",
            "Time to answer a request from Slack (the ack)",
            buckets=ACK_BUCKETS,
            registry=r,
        )

    def watch_waiting(self, count: Callable[[], int]) -> None:
        """Read the number of runs waiting for approval at each scrape."""
        self.waiting.set_function(lambda: float(count()))

    def watch_outbox(self, count: Callable[[], int]) -> None:
        """Read the number of undelivered messages at each scrape."""
        self.outbox.set_function(lambda: float(count()))

    def watch(self, engine: Engine) -> None:
        """Count incidents and lost leases recorded through `engine`."""

        def inserted(mapper: Any, connection: Any, target: Incident) -> None:
            if connection.engine is engine:
                self.incidents.labels(target.source or "slack", target.severity).inc()

        def recorded(mapper: Any, connection: Any, target: Event) -> None:
            if connection.engine is engine and target.kind == "run.lease_lost":
                self.lease_losses.inc()

        event.listen(Incident, "after_insert", inserted)
        event.listen(Event, "after_insert", recorded)
        self._unwatch = [
            lambda: event.remove(Incident, "after_insert", inserted),
            lambda: event.remove(Event, "after_insert", recorded),
        ]

    def close(self) -> None:
        """Stop listening to the engine and the runner's log."""
        for undo in getattr(self, "_unwatch", []):
            undo()
        self._unwatch = []

    def exposition(self) -> tuple[str, bytes]:
        """(content type, body) for GET /metrics."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class MeteredProgress:
    """A Progress that measures steps and runs, and tags log records with the step."""

    def __init__(self, inner: Progress, metrics: BotMetrics, store: Store | None = None) -> None:
        self.inner = inner
        self.metrics = metrics
        self.store = store
        self._started: dict[tuple[str, str], float] = {}

    def run_started(self, run: Run, *, resumed: bool) -> None:
        step_context.set({"incident_id": run.incident_id, "run_id": run.id, "target": run.target})
        self.inner.run_started(run, resumed=resumed)

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        step_context.set(
            {
                "incident_id": run.incident_id,
                "run_id": run.id,
                "target": str(step.get("source") or run.target),
                "step": str(step.get("name", "")),
            }
        )
        self._started[(run.id, str(step.get("name")))] = time.monotonic()
        self.inner.step_started(run, step)

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None:
        self.inner.step_output(run, step, line)

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        began = self._started.pop((run.id, str(step.get("name"))), None)
        if began is not None:
            self.metrics.steps.labels(str(step.get("name", "?"))).observe(time.monotonic() - began)
        self.inner.step_finished(run, step, record)

    def run_finished(self, run: Run) -> None:
        self.metrics.runs.labels(run.state).inc()
        finished = run.finished_at
        if run.state == "succeeded" and run.approved_at is not None and finished is not None:
            self.metrics.to_healthy.observe((finished - run.approved_at).total_seconds())
        if self.store is not None:
            self._observe_recovery(run, self.store)
        step_context.set({})
        self.inner.run_finished(run)

    def _observe_recovery(self, run: Run, store: Store) -> None:
        """Observe the incident's recovery phases, or a drill's time to recover."""
        drill = store.drills.get(run.id)
        if drill is not None:
            if drill.recover_seconds is not None:
                gauge = self.metrics.drill_recover.labels(drill.environment, drill.target)
                gauge.set(drill.recover_seconds)
            return
        incident = store.incidents.get(run.incident_id)
        if incident is None or incident.source == DRILL_SOURCE:
            return
        for phase in recovery(incident, store.events.of(run.incident_id)).phases:
            if phase.seconds is not None:
                labels = (phase.name, run.environment, run.target)
                self.metrics.recovery.labels(*labels).observe(phase.seconds)

    def run_expired(self, run: Run) -> None:
        self.metrics.runs.labels("expired").inc()
        self.inner.run_expired(run)
