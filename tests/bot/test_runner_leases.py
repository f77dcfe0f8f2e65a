"""Fenced leases: timed on the database's clock, a new token per claim, every write fenced.

Two runners are two Stores on two engines (as two processes are), on SQLite and on
PostgreSQL; one of them has its own clock an hour ahead, which must not matter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.config import RollbackConfig
from bot.execution.planner import Planner
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.store import LeaseLost, Store, make_engine, utcnow
from tests.fakes.rows import set_run_fields
from tests.fakes.runners import Abandons, approved_run, make_runner
from tests.fakes.targets import script_log, write_script


@pytest.fixture
def other(database_url: str, store: Store) -> Iterator[Store]:
    """A second runner's store: its own engine, its clock an hour ahead."""
    engine = make_engine(database_url)
    yield Store(engine, clock=lambda: utcnow() + timedelta(hours=1))
    engine.dispose()


def expire(store: Store, run_id: str) -> None:
    set_run_fields(store, run_id, lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))


def test_a_lease_is_timed_on_the_database_clock_not_a_process_clock(
    store: Store, other: Store, workflow: Workflow, planner: Planner
) -> None:
    run = approved_run(workflow, planner)
    assert store.leases.claim(run.id, owner="a", seconds=30) is not None
    assert other.leases.claim(run.id, owner="b", seconds=30) is None
    assert other.leases.claimable() == []
    assert other.leases.claim_next(owner="b", seconds=30) is None


def test_every_claim_gets_a_new_token_and_a_stale_one_writes_nothing(
    store: Store, other: Store, workflow: Workflow, planner: Planner
) -> None:
    run = approved_run(workflow, planner)
    first = store.leases.claim(run.id, owner="a", seconds=30)
    assert first is not None
    expire(store, run.id)
    second = other.leases.claim(run.id, owner="b", seconds=30)
    assert second is not None and second.generation == first.generation + 1
    with pytest.raises(LeaseLost):
        store.steps.save(
            run,
            position=0,
            name="stop_workers",
            event_kind="step.running",
            state="running",
            lease=first,
        )
    assert store.steps.of(run.id) == []
    with pytest.raises(LeaseLost):
        store.leases.save_memory(run.id, {"x": 1}, lease=first)
    with pytest.raises(LeaseLost):
        workflow.start(run, lease=first)
    assert not store.leases.renew(first, seconds=30)
    store.leases.release(first)
    fresh = store.runs.get(run.id)
    assert fresh is not None and fresh.state == "approved" and fresh.memory.get("x") is None
    assert fresh.lease_owner == "b" and fresh.lease_generation == second.generation
    assert other.leases.renew(second, seconds=30)
    workflow.start(run, lease=second)
    assert store.runs.get(run.id).state == "running"  # type: ignore[union-attr]


def test_claim_next_hands_each_run_to_one_runner(
    store: Store, other: Store, workflow: Workflow, planner: Planner
) -> None:
    run = approved_run(workflow, planner)
    first = store.leases.claim_next(owner="a", seconds=30)
    assert first is not None and first.run_id == run.id
    assert other.leases.claim_next(owner="b", seconds=30) is None
    assert store.leases.claim_next(owner="a", seconds=30, skip={run.id}) is None


def flaky_renew(store: Store, *, failures: int | None) -> list[str]:
    """Make `store.leases.renew` raise a database error `failures` times (None: always)."""
    real = store.leases.renew
    seen: list[str] = []

    def renew(lease: Any, *, seconds: float) -> bool:
        if failures is None or len(seen) < failures:
            seen.append("failed")
            raise OperationalError("UPDATE runs", {}, Exception("server closed the connection"))
        seen.append("renewed")
        return real(lease, seconds=seconds)

    store.leases.renew = renew  # type: ignore[method-assign]
    return seen


def race(runner: Runner, run_id: str, until: threading.Event) -> list[bool]:
    """Once the first runner holds the run, try to execute it again and again until
    `until` is set or it works; return the answers."""
    for _ in range(500):
        held = runner.store.runs.get(run_id)
        if held is not None and held.lease_owner == "a":
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the first runner never claimed the run")
    answers = []
    for _ in range(2000):
        if until.is_set():
            break
        answers.append(runner.execute(run_id))
        if answers[-1]:
            break
        time.sleep(0.02)
    return answers


def test_two_runners_racing_one_run_start_each_step_once(
    store: Store,
    other: Store,
    config: RollbackConfig,
    planner: Planner,
    script: Path,
) -> None:
    # The step outlasts the lease, so only renewals keep b out. The renew deadline (two
    # thirds of the lease) counts from the claim, before the plan is rebuilt: 4 s leave a
    # loaded machine room for the plan and two failed renewals (3 s did not, once, in CI).
    write_script(script, undo=["slow"], _slow_seconds=7)
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    renewals = flaky_renew(store, failures=2)
    first, _ = make_runner(store, workflow, config, planner, lease_seconds=6, owner="a")
    second, _ = make_runner(
        other, Workflow(store=other, config=config), config, planner, lease_seconds=6, owner="b"
    )
    done = threading.Event()
    thread = threading.Thread(target=lambda: (first.execute(run.id), done.set()))
    thread.start()
    answers = race(second, run.id, done)
    thread.join(timeout=60)
    assert not any(answers)
    assert renewals[:2] == ["failed", "failed"] and "renewed" in renewals
    assert script_log(script) == ["stop_workers", "undo", "status", "start_workers"]
    assert [s.attempts for s in store.steps.of(run.id)] == [1, 1, 1, 1]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded"


def test_a_runner_that_lost_its_lease_stops_at_the_next_safe_point_and_says_so(
    store: Store,
    other: Store,
    config: RollbackConfig,
    planner: Planner,
    script: Path,
) -> None:
    write_script(script, undo=["slow"], _slow_seconds=4, _not_idempotent=["undo"])
    workflow = Workflow(store=store, config=config)
    run = approved_run(workflow, planner)
    flaky_renew(store, failures=None)  # the heartbeat never reaches the database again
    first, _ = make_runner(store, workflow, config, planner, lease_seconds=1, owner="a")
    second, _ = make_runner(
        other, Workflow(store=other, config=config), config, planner, lease_seconds=30, owner="b"
    )
    done = threading.Event()
    thread = threading.Thread(target=lambda: (first.execute(run.id), done.set()))
    thread.start()
    answers = race(second, run.id, threading.Event())
    thread.join(timeout=60)
    assert answers[-1] is True
    # b found undo interrupted (not safe to repeat), ran the always step and stopped;
    # a finished undo, could record nothing, and started nothing after it
    assert script_log(script) == ["stop_workers", "undo", "start_workers"]
    steps = {s.name: s.state for s in store.steps.of(run.id)}
    assert steps == {
        "stop_workers": "succeeded",
        "undo": "interrupted",
        "start_workers": "succeeded",
    }
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed" and final.needs_manual
    # a was still inside undo (a sleep that heeds no fence) as its lease ran out: the bot
    # process would have exited there (tests/bot/test_runner_blocked_step.py)
    assert isinstance(first.abandon, Abandons)
    (abandoned,) = first.abandon.lines
    assert f"{run.incident_id}: run {run.id}: step undo is still running" in abandoned
    lost = [e for e in store.events.of(run.incident_id) if e.kind == "run.lease_lost"]
    assert [e.detail["owner"] for e in lost] == ["a"]
    assert [m.kind for m in store.outbox.messages(run.id)].count("run.lease_lost") == 1
