"""The after-ack pool is bounded, says when it is full, reports a failed task, drops work
that waited past its deadline before telling anyone, and says when it is stuck."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from handlers.lazy import LATE
from handlers.pool import Later
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget, write_script
from tests.fakes.ticker import FakeTicker
from tests.fakes.waiting import wait_for


def test_a_full_pool_refuses_instead_of_queueing_without_bound() -> None:
    later = Later(threads=1, queue=1)
    gate, ran = threading.Event(), []
    try:
        assert later.submit(gate.wait, 30)  # running
        assert later.submit(ran.append, "queued")  # waiting for the thread
        assert not later.submit(ran.append, "refused")
        assert later.snapshot().refused == 1
        gate.set()
        wait_for(lambda: later.snapshot().done == 2, what="both tasks to finish")
        assert ran == ["queued"]
        assert later.submit(ran.append, "room again")
        wait_for(lambda: ran == ["queued", "room again"], what="the next task")
    finally:
        gate.set()
        later.shutdown()


def test_a_failing_task_is_counted_and_its_person_told_with_a_reference() -> None:
    later = Later(threads=1, queue=4)
    told: list[str] = []

    def fails() -> None:
        raise RuntimeError("Slack said no")

    try:
        assert later.submit(fails, on_error=told.append)
        wait_for(lambda: later.snapshot().failed == 1, what="the failure to be counted")
        assert len(told) == 1 and len(told[0]) == 8
        stats = later.snapshot()
        assert (stats.queued, stats.running, stats.done) == (0, 0, 1)
    finally:
        later.shutdown()


def test_the_pool_needs_a_thread_and_room() -> None:
    for threads, queue in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="at least one"):
            Later(threads=threads, queue=queue)


def test_a_full_pool_says_so_before_a_submit_and_notices_are_bounded() -> None:
    later = Later(threads=1, queue=1)
    held = threading.Event()
    assert later.has_room()
    assert later.submit(held.wait) and later.submit(held.wait)
    assert not later.has_room()
    told: list[str] = []
    gate, started = threading.Event(), threading.Event()
    assert later.notify(lambda: (started.set(), gate.wait(10), told.append("first")))
    started.wait(10)
    for _ in range(Later.NOTICES):  # one runs, NOTICES wait: the next one is dropped
        assert later.notify(told.append, "more")
    assert not later.notify(told.append, "dropped")
    gate.set()
    held.set()
    wait_for(lambda: len(told) == 1 + Later.NOTICES, what="the notices told")
    assert "dropped" not in told and told[0] == "first"
    wait_for(later.has_room, what="room again")
    later.shutdown()


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_queued_task_past_its_deadline_never_runs_and_its_person_is_told_after() -> None:
    clock = _Clock()
    later = Later(threads=1, queue=4, deadline=20.0, clock=clock)
    hung, ran, told = threading.Event(), [], threading.Event()
    order: list[str] = []
    try:
        assert later.submit(hung.wait, 30)  # a hung worker holds the one thread
        assert later.submit(
            ran.append, "late", on_expired=lambda: (order.append("told"), told.set())
        )
        clock.now += 21.0  # the click waited past its deadline
        hung.set()
        assert told.wait(10)
        stats = later.snapshot()
        assert (stats.expired, stats.queued, stats.running) == (1, 0, 0)
        assert ran == [] and order == ["told"]
        # the pool works on: a task within its deadline runs, and the dropped one never does
        done = threading.Event()
        assert later.submit(done.set)
        assert done.wait(10)
        wait_for(lambda: later.snapshot().done == 2, what="the next task counted")
        assert ran == []
    finally:
        hung.set()
        later.shutdown()


def test_an_expired_task_without_its_own_notice_is_told_as_nothing_done() -> None:
    clock = _Clock()
    later = Later(threads=1, queue=4, deadline=5.0, clock=clock)
    hung, refs = threading.Event(), []
    told = threading.Event()
    try:
        assert later.submit(hung.wait, 30)
        assert later.submit(print, "never", on_error=lambda ref: (refs.append(ref), told.set()))
        clock.now += 6.0
        hung.set()
        assert told.wait(10)
        assert len(refs) == 1 and len(refs[0]) == 8
        assert later.snapshot().failed == 0
    finally:
        hung.set()
        later.shutdown()


def test_a_hung_task_makes_the_pool_say_it_is_stuck_until_it_ends() -> None:
    clock = _Clock()
    later = Later(threads=2, queue=4, stuck_after=60.0, clock=clock)
    hung, started = threading.Event(), threading.Event()
    try:
        assert later.submit(lambda: (started.set(), hung.wait(30)))
        assert started.wait(10)
        assert later.stuck() is None
        clock.now += 61.0
        said = later.stuck()
        assert said is not None and "running for 61s" in said
        hung.set()
        wait_for(lambda: later.snapshot().done == 1, what="the hung task to end")
        assert later.stuck() is None
    finally:
        hung.set()
        later.shutdown()


def test_a_command_acked_while_the_pool_is_hung_never_acts_late_and_is_told_so(
    tmp_path: Path,
) -> None:
    """Issue 29, 1: a `/rollback app prod` acked while every work thread hangs waits past its
    deadline; it never opens a form, the person is told nothing was done, and the same
    command sent again acts."""
    ticker, script = FakeTicker(), write_script(tmp_path / "script.json")
    config = parse_config(config_dict(), path=Path("test.yml"))
    sandbox = Sandbox(
        config=config,
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(factory=lambda params: ScriptedTarget(script)),
        ticker=ticker,
    ).start()
    later = sandbox.process.deps.later
    hung = threading.Event()
    try:
        for _ in range(later.threads):
            assert later.submit(hung.wait, 60)
        wait_for(lambda: later.snapshot().running == later.threads, what="every thread hung")
        alice = sandbox.person(ALICE)
        assert alice.slash("app prod").status_code == 200  # acked at once
        wait_for(lambda: later.snapshot().queued == 1, what="the command queued")
        ticker.advance(sandbox.settings.work_deadline_seconds + 1)
        hung.set()
        told = wait_for(
            lambda: [c for c in sandbox.slack.calls_to("chat.postEphemeral") if LATE in str(c)],
            what="the person told",
        )
        assert len(told) == 1
        assert later.snapshot().expired == 1
        assert sandbox.slack.calls_to("views.open") == []
        assert alice.slash("app prod").status_code == 200  # the same command acts now
        wait_for(lambda: sandbox.slack.calls_to("views.open"), what="the form opening")
        assert later.snapshot().expired == 1
    finally:
        hung.set()
        sandbox.stop()
