"""The series that come from the bot's own records: lost leases and the outbox backlog."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.persistence.models import Run
from bot.persistence.store import Store, make_engine, upgrade
from bot.serving.metrics import BotMetrics


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def metrics(store: Store) -> Iterator[BotMetrics]:
    metrics = BotMetrics()
    metrics.watch(store.engine)
    yield metrics
    metrics.close()


def _run(store: Store) -> Run:
    incident = store.incidents.create(
        environment="prod", target="app", severity="critical", opened_by="UALICE0001"
    )
    return store.runs.create(
        locks=["app"],
        actor="UALICE0001",
        incident_id=incident.id,
        environment="prod",
        target="app",
        point=None,
        plan=[],
        plan_hash="0" * 64,
        requester="UALICE0001",
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )


def _value(metrics: BotMetrics, name: str) -> float:
    found = metrics.registry.get_sample_value(name)
    assert found is not None, name
    return found


def test_a_lost_lease_recorded_by_the_runner_is_counted_once(
    store: Store, metrics: BotMetrics
) -> None:
    run = _run(store)
    store.events.add(incident_id=run.incident_id, run_id=run.id, kind="run.resumed")
    assert _value(metrics, "rollback_lease_losses_total") == 0
    store.events.add(incident_id=run.incident_id, run_id=run.id, kind="run.lease_lost")
    assert _value(metrics, "rollback_lease_losses_total") == 1


def test_outbox_backlog_counts_what_waits_for_slack(store: Store, metrics: BotMetrics) -> None:
    metrics.watch_outbox(store.outbox.backlog)
    run = _run(store)
    assert _value(metrics, "rollback_outbox_backlog") == 0
    store.outbox.enqueue(run.id, "run.started")
    store.outbox.enqueue(run.id, "run.finished")
    assert _value(metrics, "rollback_outbox_backlog") == 2
    (first, _) = store.outbox.messages(run.id)
    store.outbox.done(first.id, state="sent")
    assert _value(metrics, "rollback_outbox_backlog") == 1
