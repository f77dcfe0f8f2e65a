"""Monitoring starts the same flow: a Critical incident, and where allowed, a rollback.

Two sources raise an incident: Alertmanager's webhook (handlers/alerts.py) and
the bot's own poller of the environment's metrics against the procedures'
thresholds (error rate %, response time ms). Both end here, in `raise_incident`,
which is idempotent per target: while a run holds the target, a second alert
is recorded on that incident instead of opening another.

The procedures' emergency script rolls back the moment a threshold is crossed.
The bot keeps a person in the loop even then: where `auto_rollback` is on, the
run is approved by "monitoring" only after `veto_seconds`, and anyone who may
approve can reject or cancel it in the thread meanwhile. Where it is off, the
incident waits for a person's approval like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from actions.base import ActionError
from actions.http import MetricsReading
from bot.config import Environment, RollbackConfig
from bot.decision import Answers, Severity
from bot.models import Incident, Run
from bot.plans import Planner, default_point
from bot.store import Conflict, Store, TargetBusy
from bot.verification import MetricsReader
from bot.workflow import Workflow

log = logging.getLogger(__name__)
MONITORING = "monitoring"
AUTO_AT = "auto_approve_at"


class MonitorEvents(Protocol):
    """What the Slack layer does when monitoring opens or approves a rollback."""

    def opened(self, incident: Incident, run: Run) -> None: ...

    def auto_approved(self, run: Run) -> None: ...


@dataclass(frozen=True)
class Raised:
    """What one alert led to."""

    incident_id: str
    opened: bool
    message: str


def breaches(env: Environment, reading: MetricsReading) -> list[str]:
    """Say which thresholds the reading crosses, in the procedures' words."""
    found = []
    limits = env.thresholds
    if reading.error_rate is not None and reading.error_rate > limits.error_rate_percent:
        found.append(
            f"Error rate is {reading.error_rate:g}% (threshold: {limits.error_rate_percent:g}%)"
        )
    if reading.response_time_ms is not None and reading.response_time_ms > limits.response_time_ms:
        found.append(
            f"Response time is {reading.response_time_ms:g}ms "
            f"(threshold: {limits.response_time_ms:g}ms)"
        )
    return found


@dataclass
class Monitor:
    """Opens monitoring incidents and approves them when their veto window has passed."""

    config: RollbackConfig
    store: Store
    workflow: Workflow
    planner: Planner
    reader: MetricsReader
    events: MonitorEvents

    def raise_incident(
        self, *, environment: str, target: str, reason: str, detected_at: datetime | None = None
    ) -> Raised:
        """Open a Critical incident and request the rollback, once per busy target."""
        env = self.config.environment(environment)
        self.config.target(environment, target)
        holder = self.store.lock_holder(environment=environment, targets=[target])
        if holder is not None:
            self.store.add_event(
                incident_id=holder,
                kind="monitoring.alert",
                actor=MONITORING,
                detail={"reason": reason},
            )
            return Raised(
                holder, False, f"{target} in {environment} is already handled in {holder}"
            )
        points = self.planner.points(env, target)
        point = default_point(points)
        plan = self.planner.build(
            env_name=environment, env=env, target=target, point=point.ref if point else None
        )
        try:
            incident, run = self.workflow.request(
                plan=plan,
                requester=MONITORING,
                severity=Severity.CRITICAL,
                answers=Answers(functional=False),
                summary=reason,
                source=MONITORING,
                detected_at=detected_at,
            )
        except TargetBusy as exc:
            return Raised(exc.incident_id, False, str(exc))
        if env.auto_rollback:
            at = self.store.clock() + timedelta(seconds=env.veto_seconds)
            self.store.set_run_fields(run.id, memory={**run.memory, AUTO_AT: at.isoformat()})
            run = self.store.run(run.id) or run
        log.warning(
            "%s: monitoring opened a rollback of %s in %s: %s",
            incident.id,
            target,
            environment,
            reason,
        )
        self.events.opened(incident, run)
        return Raised(incident.id, True, f"opened {incident.id}")

    def poll(self) -> list[Raised]:
        """Read every monitored environment's metrics once; raise incidents where crossed."""
        raised = []
        for name, env in self.config.environments.items():
            if env.metrics is None or env.monitoring is None or not env.monitoring.poll_seconds:
                continue
            try:
                reading = self.reader(env.metrics)
            except (ActionError, OSError) as exc:
                log.warning("metrics of %s could not be read: %s", name, exc)
                continue
            crossed = breaches(env, reading)
            if crossed:
                reason = "EMERGENCY: " + "; ".join(crossed)
                raised.append(
                    self.raise_incident(
                        environment=name, target=env.monitoring.target, reason=reason
                    )
                )
        return raised

    def approve_due(self) -> list[Run]:
        """Approve, as monitoring, every requested run whose veto window has passed."""
        approved = []
        now = self.store.clock()
        for run in self.store.runs(states=("requested",), limit=500):
            due = run.memory.get(AUTO_AT)
            if run.requester != MONITORING or not due or datetime.fromisoformat(due) > now:
                continue
            try:
                fresh = self.store.transition(
                    run,
                    to="approved",
                    kind="run.auto_approved",
                    actor=MONITORING,
                    detail={"veto_window_ended": due},
                    approved_at=now,
                )
            except Conflict:
                continue
            approved.append(fresh)
            self.events.auto_approved(fresh)
        return approved
