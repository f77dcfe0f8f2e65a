"""The after-ack pool is bounded, says when it is full, and reports a failed task."""

from __future__ import annotations

import threading

import pytest

from handlers.pool import Later
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
