"""Fill the bot's database with past rollbacks, for the history tests and bench.

`fill_history` inserts `count` finished runs (with their incident, three
succeeded steps and their Slack messages) spread over the days before
`until`, in batches through SQLAlchemy Core, so 100 k rows take seconds on
either database. The runs are finished (succeeded, failed or cancelled), on
a handful of targets, so they crowd every query by state, target and time
without holding a target lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from bot.persistence.models import Incident, Run, SlackMessage, StepRecord

STATES = ("succeeded", "failed", "cancelled")
TARGETS = ("app", "db", "full", "worker", "lb")


def fill_history(
    engine: Engine, *, count: int, until: datetime, environment: str = "prod", batch: int = 2000
) -> None:
    """Insert `count` finished runs, each a minute older than the next, ending before `until`."""
    for start in range(0, count, batch):
        numbers = range(start, min(count, start + batch))
        rows = [_rows(n, until - timedelta(minutes=n + 1), environment) for n in numbers]
        with engine.begin() as connection:
            for table, index in ((Incident, 0), (Run, 1), (StepRecord, 2), (SlackMessage, 3)):
                values = [v for row in rows for v in _listed(row[index])]
                connection.execute(insert(table), values)


def _listed(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value]


def _rows(n: int, at: datetime, environment: str) -> tuple[Any, ...]:
    incident_id = f"INC-PAST-{n:07d}"
    run_id = f"past-{n:07d}"
    target = TARGETS[n % len(TARGETS)]
    state = STATES[n % len(STATES)]
    incident = {
        "id": incident_id,
        "created_at": at,
        "environment": environment,
        "target": target,
        "severity": "high",
        "source": "slack",
        "opened_by": "UPAST00001",
        "summary": "",
        "answers": {},
        "reason": "",
        "channel": "C0PAST0001",
        "card_ts": f"{1_600_000_000 + n}.000100",
    }
    run = {
        "id": run_id,
        "incident_id": incident_id,
        "environment": environment,
        "target": target,
        "point": "v1",
        "plan": [],
        "plan_hash": "0" * 64,
        "requester": "UPAST00001",
        "state": state,
        "version": 3,
        "approvals_required": 1,
        "break_glass": False,
        "review_required": False,
        "force": False,
        "needs_manual": False,
        "outcome": state,
        "created_at": at,
        "expires_at": at + timedelta(minutes=30),
        "approved_at": at,
        "started_at": at,
        "finished_at": at + timedelta(seconds=30),
        "lease_generation": 1,
        "memory": {},
        "notes": [],
        "slack": {"channel": "C0PAST0001", "thread_ts": f"{1_600_000_000 + n}.000100"},
    }
    steps = [
        {
            "run_id": run_id,
            "position": p,
            "name": f"step-{p}",
            "state": "succeeded",
            "attempts": 1,
            "started_at": at,
            "finished_at": at + timedelta(seconds=10 * p),
            "summary": "done",
            "output": "",
            "data": {"restore_bytes_per_second": 1e8} if p == 1 else {},
        }
        for p in (1, 2, 3)
    ]
    messages = [
        {
            "run_id": run_id,
            "slot": slot,
            "channel": "C0PAST0001",
            "ts": f"{1_600_000_000 + n}.{k:06d}",
            "at": at,
        }
        for k, slot in ((200, "progress"), (300, "checklist_ts"))
    ]
    return incident, run, steps, messages
