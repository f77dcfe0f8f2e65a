"""The procedures' post-rollback verification checklist, from what the bot recorded.

The bot ticks what it can show evidence for: health (its health step),
database integrity (its verification queries), and, where metrics are
configured, performance and error rates against the environment's
thresholds. The rest are for people; each tick is an audit event, so the
checklist can be rebuilt at any time from the log.

It reads the records as `bot.domain.records` describes them; `read_metrics` reads the
environment's metrics source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import actions.http as http_steps
from actions.base import ActionError
from actions.http import Metrics, MetricsReading
from bot.config import Environment
from bot.domain.records import EventRecord as Event
from bot.domain.records import StepView

log = logging.getLogger(__name__)

ITEMS = (
    ("health", "System Health: All health checks are passing"),
    ("database", "Database Integrity: Data consistency checks completed"),
    ("auth", "User Authentication: Login functionality working"),
    ("core", "Core Features: Agent creation, campaigns, API calls working"),
    ("external", "External Services: Groq, Deepgram, Twilio connectivity verified"),
    ("monitoring", "Monitoring: All monitoring systems are operational"),
    ("performance", "Performance: Response times within acceptable ranges"),
    ("errors", "Error Rates: Error rates back to normal levels"),
)
TICK = "checklist.tick"


@dataclass(frozen=True)
class VerifyItem:
    """One line of the checklist."""

    key: str
    label: str
    automatic: bool
    ok: bool | None = None
    evidence: str = ""
    ticked_by: str | None = None


MetricsReader = Callable[[Metrics], MetricsReading]


def read_metrics(metrics: Metrics) -> MetricsReading:
    """Read the monitoring numbers over HTTP (httpx is imported at the first reading)."""
    return http_steps.read_metrics(metrics)


def checklist(
    env: Environment,
    steps: list[StepView],
    events: Sequence[Event],
    *,
    reader: MetricsReader = read_metrics,
) -> list[VerifyItem]:
    """Build the checklist: automatic items with evidence, the rest with who ticked them."""
    auto: dict[str, tuple[bool, str]] = {}
    health = _step(steps, "health")
    if health is not None:
        auto["health"] = (health.state == "succeeded", health.summary or health.state)
    database = _step(steps, "verif")
    if database is not None:
        auto["database"] = (database.state == "succeeded", database.summary or database.state)
    if env.metrics is not None:
        auto.update(_metric_items(env, reader))
    ticks = ticked_by(events)
    items = []
    for key, label in ITEMS:
        if key in auto:
            ok, evidence = auto[key]
            items.append(VerifyItem(key, label, True, ok=ok, evidence=evidence))
        else:
            items.append(VerifyItem(key, label, False, ticked_by=ticks.get(key)))
    return items


def _step(steps: list[StepView], fragment: str) -> StepView | None:
    return next((s for s in reversed(steps) if fragment in s.name), None)


def _metric_items(env: Environment, reader: MetricsReader) -> dict[str, tuple[bool, str]]:
    assert env.metrics is not None
    try:
        reading = reader(env.metrics)
    except (ActionError, OSError) as exc:
        log.warning("could not read metrics for the checklist: %s", exc)
        return {}
    found: dict[str, tuple[bool, str]] = {}
    limits = env.thresholds
    if reading.response_time_ms is not None:
        ok = reading.response_time_ms < limits.response_time_ms
        found["performance"] = (
            ok,
            f"response time {reading.response_time_ms:.0f} ms "
            f"(threshold {limits.response_time_ms:.0f} ms)",
        )
    if reading.error_rate is not None:
        ok = reading.error_rate < limits.error_rate_percent
        found["errors"] = (
            ok,
            f"error rate {reading.error_rate:.1f}% (threshold {limits.error_rate_percent:.0f}%)",
        )
    return found


def ticked_by(events: Sequence[Event]) -> dict[str, str]:
    """Return who ticked each item that is ticked now, from the tick events in order."""
    ticked: dict[str, str] = {}
    for event in events:
        if event.kind != TICK:
            continue
        key = str(event.detail.get("item"))
        if event.detail.get("checked"):
            ticked[key] = event.actor or ""
        else:
            ticked.pop(key, None)
    return ticked
