"""Drill series, read from the drills' standing at each scrape (`Drills.statuses`).

- `rollback_drill_flagged{environment,target,reason}`: 1 for each flag a target's drill
  standing carries (`failed`, `slower than the RTO`, `overdue`); alert on it;
- `rollback_drill_age_seconds{environment,target}`: since the last drill that recovered;
- `rollback_time_to_recover_seconds{environment,target,kind}`: the last drill's (`drill`)
  and the last real rollback's (`rollback`) time to recover: scraped over time, the trend;
- `rollback_drill_restore_bytes_per_second{environment,target}`: a restore drill's dump
  restore throughput.

Read at scrape time, like the approvals waiting: the numbers are the store's, so every
replica exports the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.application.drills import DrillStatus

LABELS = ["environment", "target"]


class DrillCollector(Collector):
    """The drill series of every drillable target."""

    def __init__(self, statuses: Callable[[], list[DrillStatus]]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        flagged = GaugeMetricFamily(
            "rollback_drill_flagged",
            "1 when the target's drill failed, was slower than its RTO, or is overdue",
            labels=[*LABELS, "reason"],
        )
        age = GaugeMetricFamily(
            "rollback_drill_age_seconds",
            "Seconds since the target's last drill that recovered",
            labels=LABELS,
        )
        recover = GaugeMetricFamily(
            "rollback_time_to_recover_seconds",
            "The last drill's and the last real rollback's time to recover",
            labels=[*LABELS, "kind"],
        )
        rate = GaugeMetricFamily(
            "rollback_drill_restore_bytes_per_second",
            "The last restore drill's dump restore throughput",
            labels=LABELS,
        )
        for status in self.statuses():
            where = [status.environment, status.target]
            for reason in status.flags:
                flagged.add_metric([*where, reason], 1.0)
            since = status.age(status.recovered)
            if since is not None:
                age.add_metric(where, since.total_seconds())
            if status.trend:
                recover.add_metric([*where, "drill"], status.trend[-1])
            if status.rollbacks:
                recover.add_metric([*where, "rollback"], status.rollbacks[-1])
            steps = status.recovered.steps if status.recovered is not None else []
            measured = [s["bytes_per_second"] for s in steps if "bytes_per_second" in s]
            if measured:
                rate.add_metric(where, float(measured[0]))
        yield from (flagged, age, recover, rate)


def watch_drills(registry: CollectorRegistry, statuses: Callable[[], list[DrillStatus]]) -> None:
    """Export the drill series from `statuses` at each scrape."""
    registry.register(DrillCollector(statuses))
