"""A long step's readings reach the progress message, at most once per interval."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.persistence.store import StepView
from handlers import blocks
from handlers.progress import SlackProgress
from tests.fakes.runs import a_run


class Queued:
    """Records what SlackProgress queues (in production the outbox's enqueue)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []

    def enqueue(self, run_id: str, kind: str, detail: dict[str, Any] | None = None) -> None:
        self.messages.append((run_id, kind, detail or {}))


def test_readings_are_queued_at_most_every_interval_with_elapsed_and_count() -> None:
    now = [0.0]
    queued = Queued()
    wake = threading.Event()
    progress = SlackProgress(wake, queued.enqueue, every=10.0, clock=lambda: now[0])
    run = a_run(2)
    progress.step_started(run, run.plan[1])
    for second in range(1, 63):  # a health poll answering 503 once a second
        now[0] = float(second)
        progress.step_output(run, run.plan[1], f"health: 503 x{second}")
    details = [d for _, kind, d in queued.messages if kind == "step.progress"]
    assert [d["elapsed"] for d in details] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert details[-1] == {
        "position": 1,
        "line": "health: 503 x60",
        "elapsed": 60.0,
        "readings": 60,
    }
    assert wake.is_set()
    progress.step_finished(run, run.plan[1], _record(1, "succeeded"))
    now[0] = 100.0
    progress.step_output(run, run.plan[1], "late line")  # a new step's clock starts again
    assert len([m for m in queued.messages if m[1] == "step.progress"]) == 6


def test_without_a_queue_lines_are_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    wake = threading.Event()
    progress = SlackProgress(wake, every=0.0)
    run = a_run(1)
    progress.step_started(run, run.plan[0])
    wake.clear()
    with caplog.at_level(logging.INFO, logger="handlers.progress"):
        progress.step_output(run, run.plan[0], "health: 503")  # nothing to queue it with
    step = run.plan[0]["name"]
    assert [r.getMessage() for r in caplog.records] == [f"{run.incident_id}: {step}: health: 503"]
    assert not wake.is_set()  # nothing queued, so the sender is not woken


def _record(position: int, state: str) -> StepView:
    at = datetime(2026, 11, 24, tzinfo=UTC)
    return StepView(position, f"step{position}", state, 1, at, None, "", "", {})


def test_progress_shows_the_running_steps_latest_reading_and_its_timeout() -> None:
    run = a_run(2)
    run.state = "running"
    run.plan[1]["timeout"] = 300
    live = {"position": 1, "line": "health: 503 x12 <!channel>", "elapsed": 62.0, "readings": 12}
    records = [_record(0, "succeeded"), _record(1, "running")]
    shown = json.dumps(
        [b.to_dict() for b in blocks.progress_message(run, records, live=live)],
        ensure_ascii=False,
    )
    assert "_62 s of 300 s · 12 readings · health: 503 x12 &lt;!channel&gt;_" in shown
    finished = [_record(0, "succeeded"), _record(1, "succeeded")]
    shown = json.dumps([b.to_dict() for b in blocks.progress_message(run, finished, live=live)])
    assert "readings" not in shown  # a finished step shows its result, not a stale reading
