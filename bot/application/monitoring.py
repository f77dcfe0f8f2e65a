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

The poller also teaches the bot which versions are good: once its readings have
stayed within the thresholds for `healthy_after` while one version of the
monitored target ran (the version is read at the start and the end of that
stretch; a breach, an unreadable reading or another version starts it over),
that version is recorded as known healthy, so a later rollback defaults to it
rather than to whatever happened to run before. The stretch lives in the
process: a restart only delays the next record.

Opening and approving go through the application layer (bot.application.flows: the same
`open_from_alert` and `auto_approve_due` use cases the Slack side uses), so
monitoring's incidents get the same compensating path: if Slack refuses the
thread (the bot not invited, a 500), the flow cancels the run with the reason
and frees the target, and the next alert opens a fresh incident. The composition
root (bot/app.py) builds the flows with the incident thread as their Slack side and
hands them in as `AlertFlows`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from actions.base import ActionError, PlanningError, RollbackPoint, running_point
from actions.http import MetricsReading
from bot.application.failures import MONITORING, disarmed_by
from bot.application.requests import Opened, ThreadNotOpened
from bot.application.verification import MetricsReader
from bot.config import Environment, RollbackConfig
from bot.domain.plans import lasting
from bot.domain.versions import VersionNote
from bot.execution.planner import Planner
from bot.execution.workflow import Refused
from bot.persistence.models import Run
from bot.persistence.store import Store

log = logging.getLogger(__name__)


class AlertFlows(Protocol):
    """The use cases monitoring goes through (bot.application.flows.Flows)."""

    def open_from_alert(
        self,
        *,
        environment: str,
        target: str,
        reason: str,
        detected_at: datetime | None = None,
        auto_approve: bool = True,
        received_at: datetime | None = None,
    ) -> Opened: ...

    def auto_approve_due(self) -> list[Run]: ...


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
    planner: Planner
    reader: MetricsReader
    flows: AlertFlows
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)
    _healthy_since: dict[str, tuple[RollbackPoint, datetime]] = field(default_factory=dict)
    """Per environment: the version that ran when the readings turned good, and when."""

    def _lock(self, environment: str, target: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((environment, target), threading.Lock())

    def raise_incident(
        self, *, environment: str, target: str, reason: str, detected_at: datetime | None = None
    ) -> Raised:
        """Open a Critical incident and request the rollback, once per busy target; the veto
        window counts from now, the alert's arrival."""
        received = self.store.clock()
        self.config.environment(environment)
        self.config.target(environment, target)
        with self._lock(environment, target):
            return self._raise(environment, target, reason, detected_at, received)

    def _raise(
        self,
        environment: str,
        target: str,
        reason: str,
        detected_at: datetime | None,
        received: datetime,
    ) -> Raised:
        env = self.config.environment(environment)
        holder = self.store.runs.lock_holder(environment=environment, targets=[target])
        if holder is not None:
            return self._record_on(holder, environment, target, reason)
        held = None
        if env.auto_rollback:
            held = self._held(env, environment, target, self.planner.points(env, target))
        summary = f"{reason}\nAutomatic rollback held: {held}" if held else reason
        try:
            opened = self.flows.open_from_alert(
                environment=environment,
                target=target,
                reason=summary,
                detected_at=detected_at,
                auto_approve=held is None,
                received_at=received,
            )
        except ThreadNotOpened as exc:  # the flow withdrew the run and freed the target
            log.error(
                "monitoring could not open a thread for %s in %s: %s", target, environment, exc
            )
            return Raised(self._latest_incident(environment, target), False, str(exc))
        except Refused as exc:
            holder = self.store.runs.lock_holder(environment=environment, targets=[target])
            if holder is not None:  # another process won the race; the flow recorded the alert
                return Raised(holder, False, str(exc))
            raise PlanningError(str(exc)) from None
        incident = opened.incident
        if held:
            self.store.events.add(
                incident_id=incident.id,
                kind="monitoring.auto_rollback_held",
                actor=MONITORING,
                detail={"reason": held},
            )
        log.warning(
            "%s: monitoring opened a rollback of %s in %s: %s",
            incident.id,
            target,
            environment,
            reason,
        )
        return Raised(incident.id, True, f"opened {incident.id}")

    def _latest_incident(self, environment: str, target: str) -> str:
        latest = self.store.runs.find(environment=environment, target=target, limit=1)
        return latest[0].incident_id if latest else ""

    def _record_on(self, holder: str, environment: str, target: str, reason: str) -> Raised:
        """Record a repeated alert on the incident that already handles the target."""
        self.store.events.add(
            incident_id=holder, kind="monitoring.alert", actor=MONITORING, detail={"reason": reason}
        )
        return Raised(holder, False, f"{target} in {environment} is already handled in {holder}")

    def _held(
        self, env: Environment, environment: str, target: str, points: list[RollbackPoint]
    ) -> str | None:
        """Why monitoring must not approve this rollback itself, or None."""
        disarmed = disarmed_by(self.store, environment=environment, target=target)
        if disarmed is not None:
            return (
                f"automatic rollback of {target} is disarmed since monitoring rolled it back "
                f"itself in {disarmed.incident_id}; a person re-arms it in App Home. "
                "A person must approve."
            )
        minutes = env.auto_rollback_cooldown_minutes
        since = self.store.clock() - timedelta(minutes=minutes)
        recent = self.store.runs.find(environment=environment, target=target, limit=50)
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
        current = running_point(points)
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
        incident_id = self.store.runs.lock_holder(environment=environment, targets=[target])
        if incident_id is None:
            latest = self.store.runs.find(environment=environment, target=target, limit=1)
            incident_id = latest[0].incident_id if latest else None
        if incident_id is not None:
            self.store.events.add(
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
                self._healthy_since.pop(name, None)
                continue
            crossed = breaches(env, reading)
            if not crossed:
                self._observe_healthy(name, env)
            else:
                self._healthy_since.pop(name, None)
                reason = "EMERGENCY: " + "; ".join(crossed)
                raised.append(
                    self.raise_incident(
                        environment=name, target=env.monitoring.target, reason=reason
                    )
                )
        return raised

    def _observe_healthy(self, name: str, env: Environment) -> None:
        """Record the running version as known healthy after `healthy_after` of good readings."""
        if env.monitoring is None or not env.monitoring.healthy_after:
            return
        target, now = env.monitoring.target, self.store.clock()
        since = self._healthy_since.get(name)
        if since is not None and now - since[1] < timedelta(seconds=env.monitoring.healthy_after):
            return
        current = self._running(name, env, target)
        if current is None:
            self._healthy_since.pop(name, None)
            return
        if since is not None and since[0].key == current.key:
            note = VersionNote(
                environment=name,
                target=target,
                incident_id=None,
                healthy=(current.key, lasting(current)),
            )
            self.store.versions.remember(note)
            log.info("%s %s: %s recorded as known healthy", name, target, current.label)
        self._healthy_since[name] = (current, now)

    def _running(self, name: str, env: Environment, target: str) -> RollbackPoint | None:
        """The version of `target` running now, or None when it cannot be read."""
        try:
            points = self.planner.points(env, target)
        except (ActionError, OSError) as exc:
            log.warning("%s %s: the running version could not be read: %s", name, target, exc)
            return None
        return running_point(points)

    def approve_due(self) -> list[Run]:
        """Approve, as monitoring, every requested run whose veto window has passed."""
        return self.flows.auto_approve_due()
