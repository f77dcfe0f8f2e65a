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

Two rules keep automation from flapping, stated on the incident card when they
apply, and recorded as an event: monitoring never approves a second rollback
of the same target within `auto_rollback_cooldown_minutes` of its last one,
and never approves rolling back a rollback (any succeeded rollback of the
target within that window, or where the target reports the version a
rollback put there as its current one). A person can still approve.

Duplicate alerts are cheap and leave nothing behind: the target's lock is
checked before anything is planned or written, a process-wide lock per
target serialises the alerts one process receives at once, and where two
processes still race, the loser's incident is discarded by the workflow.
A resolved alert is recorded on the target's open incident (or its latest).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from actions.base import ActionError, RollbackPoint
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
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock(self, environment: str, target: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((environment, target), threading.Lock())

    def raise_incident(
        self, *, environment: str, target: str, reason: str, detected_at: datetime | None = None
    ) -> Raised:
        """Open a Critical incident and request the rollback, once per busy target."""
        self.config.environment(environment)
        self.config.target(environment, target)
        with self._lock(environment, target):
            return self._raise(environment, target, reason, detected_at)

    def _raise(
        self, environment: str, target: str, reason: str, detected_at: datetime | None
    ) -> Raised:
        env = self.config.environment(environment)
        holder = self.store.lock_holder(environment=environment, targets=[target])
        if holder is not None:
            return self._record_on(holder, environment, target, reason)
        points = self.planner.points(env, target)
        point = default_point(points)
        plan = self.planner.build(
            env_name=environment, env=env, target=target, point=point.ref if point else None
        )
        held = self._held(env, environment, target, points) if env.auto_rollback else None
        summary = f"{reason}\nAutomatic rollback held: {held}" if held else reason
        try:
            incident, run = self.workflow.request(
                plan=plan,
                requester=MONITORING,
                severity=Severity.CRITICAL,
                answers=Answers(functional=False),
                summary=summary,
                source=MONITORING,
                detected_at=detected_at,
            )
        except TargetBusy as exc:  # another process won the race; ours left no record
            return self._record_on(exc.incident_id, environment, target, reason)
        if held:
            self.store.add_event(
                incident_id=incident.id,
                kind="monitoring.auto_rollback_held",
                actor=MONITORING,
                detail={"reason": held},
            )
        elif env.auto_rollback:
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

    def _record_on(self, holder: str, environment: str, target: str, reason: str) -> Raised:
        """Record a repeated alert on the incident that already handles the target."""
        self.store.add_event(
            incident_id=holder, kind="monitoring.alert", actor=MONITORING, detail={"reason": reason}
        )
        return Raised(holder, False, f"{target} in {environment} is already handled in {holder}")

    def _held(
        self, env: Environment, environment: str, target: str, points: list[RollbackPoint]
    ) -> str | None:
        """Why monitoring must not approve this rollback itself, or None."""
        minutes = env.auto_rollback_cooldown_minutes
        since = self.store.clock() - timedelta(minutes=minutes)
        recent = self.store.runs(environment=environment, target=target, limit=50)
        for run in recent:
            if run.requester == MONITORING and run.approved_at and run.approved_at >= since:
                return (
                    f"monitoring already rolled {target} back automatically in "
                    f"{run.incident_id} at {run.approved_at:%H:%M} UTC; no second automatic "
                    f"rollback within {minutes:g} minutes. A person must approve."
                )
        done = next((run for run in recent if run.state == "succeeded"), None)
        if done is None:
            return None
        current = next((p for p in points if p.is_current), None)
        recently = done.finished_at is not None and done.finished_at >= since
        if recently or (current is not None and current.ref == done.point):
            return (
                f"the live {target} is what rollback {done.incident_id} put there; monitoring "
                "never rolls back a rollback. A person must approve."
            )
        return None

    def resolved(self, *, environment: str, target: str, alert: str, ended_at: str) -> str | None:
        """Record a resolved alert on the target's open incident (else its latest); its id."""
        self.config.target(environment, target)
        incident_id = self.store.lock_holder(environment=environment, targets=[target])
        if incident_id is None:
            latest = self.store.runs(environment=environment, target=target, limit=1)
            incident_id = latest[0].incident_id if latest else None
        if incident_id is not None:
            self.store.add_event(
                incident_id=incident_id,
                kind="monitoring.resolved",
                actor=MONITORING,
                detail={"alert": alert, "ended_at": ended_at},
            )
        return incident_id

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
