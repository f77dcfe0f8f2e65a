"""Slack failing while a rollback runs: the run never waits, and the thread is whole afterwards.

Beside tests/bot/test_outbox.py (faults before and after a run, one kind at a
time), here the outbox's sender runs in its own thread beside the runner, as
in `serve`, while the sandbox's fake Slack Web API answers 429 with a real
Retry-After, 500, drops the connection and stalls its answer, each in turn on
every call the rollback's messages cause. "The rollback does not wait on
Slack" is asserted without timing: the first call Slack receives is held
inside the fake until the run has finished (so the run can only finish if
nothing in it waits on delivery), and nothing of the run is delivered by then.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from bot.execution.outbox import Sender
from bot.persistence.store import Store
from handlers.deps import Deps
from handlers.outbox import SlackOutbox
from sandbox.slack import FakeSlack
from sandbox.slack.models import Call
from tests.fakes.config import Clock
from tests.fakes.outbox import EXPECTED, deliver_all, opened_run, runner_for, thread_texts

pytest_plugins = ["tests.fakes.outbox"]  # the `slack` and `deps` fixtures

METHODS = ("chat.postMessage", "chat.update")
STEPS = 4  # the scripted plan's steps: each one posts and updates
STALL_SECONDS = 0.3  # a slow answer; what holds the run is tested by the held first call


def fault_every_call(slack: FakeSlack, *, rounds: int) -> None:
    """Queue 429 (Retry-After 2 s), 500, a stall and a dropped connection, `rounds` times.

    The fake applies stalls and drops before answering and 429/500 as the
    answer, so the first calls are stalled and then refused, the next dropped.
    """
    for method in METHODS:
        slack.fail_next(method, status=429, retry_after=2, times=rounds)
        slack.fail_next(method, error="internal_error", status=500, times=rounds)
        slack.stall_next(method, seconds=STALL_SECONDS, times=rounds)
        slack.drop_next(method, times=rounds)


def test_slack_failing_in_every_way_during_every_step_does_not_hold_the_rollback(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    run_done, inside = threading.Event(), threading.Event()

    def stall_the_first_call_until_the_run_is_over(call: Call) -> None:
        if not inside.is_set():
            inside.set()
            run_done.wait(timeout=120)

    slack.on_call(stall_the_first_call_until_the_run_is_over)
    stop = threading.Event()
    serving = threading.Thread(target=sender.serve, args=(stop,), kwargs={"poll_seconds": 0.05})
    serving.start()
    try:
        fault_every_call(slack, rounds=STEPS)
        assert runner_for(deps, sender).run_pending() == [run.id]
        final = store.runs.get(run.id)
        assert final is not None and final.state == "succeeded", final.outcome
        # Slack has answered nothing of this run yet (the sender, if it called, is held)
        assert any(m.state == "pending" for m in store.outbox.messages(run.id))
    finally:
        run_done.set()
        stop.set()
        sender.wake.set()
        serving.join(timeout=120)
    assert not serving.is_alive()
    deliver_all(sender, clock)
    assert thread_texts(slack, run, store) == EXPECTED  # in order, none twice
    assert {m.state for m in store.outbox.messages(run.id)} <= {"sent", "superseded"}
    statuses = {c.status for c in slack.calls}
    assert {429, 500} <= statuses


def test_a_rate_limited_message_waits_for_slacks_retry_after(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    for method in METHODS:
        slack.fail_next(method, status=429, retry_after=7)
    assert runner_for(deps, sender).run_pending() == [run.id]
    before = len(slack.calls)
    sender.deliver_due()
    limited = [c for c in slack.calls[before:] if c.status == 429]
    assert len(limited) == 1
    (head,) = [m for m in store.outbox.heads() if m.run_id == run.id]
    assert head.attempts == 1 and head.next_attempt_at == clock() + timedelta(seconds=7)
    calls = len(slack.calls)
    clock.advance(seconds=6)
    sender.deliver_due()
    assert len(slack.calls) == calls  # not before Retry-After
    clock.advance(seconds=1)
    deliver_all(sender, clock)
    assert thread_texts(slack, run, store) == EXPECTED
