"""The ack never waits behind work: not its own request's, not another's (issue 16, point 1).

The whole bot runs as in the demo: fake Slack, the fake Kubernetes API
server with the demo's Deployment, the real Bolt app behind bot/server.py.
Both stand-ins are slowed and every call to them is recorded in one list
together with every `ack()` Bolt sends, so the order is what the bot did,
not what a clock says. No assertion is about time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from slack_bolt.context.ack.ack import Ack

from bot.demo import ALICE, BOB, demo_world
from sandbox import platform
from sandbox.harness import Sandbox
from sandbox.kubernetes import FakeKubernetes
from tests.fakes.waiting import wait_for

ANSWERS = {
    "severity": "high",
    "q_functional": "no",
    "q_data_at_risk": "no",
    "q_severe_impact": "yes",
}


class Recorder:
    """One ordered record of acks and stand-in calls, with a gate that holds chosen calls."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.gated: set[str] = set()
        self.held = 0

    def note(self, event: str) -> None:
        with self.lock:
            self.events.append(event)

    def hold(self, event: str) -> None:
        if event in self.gated and not self.gate.is_set():
            with self.lock:
                self.held += 1
            self.gate.wait(30)

    def since(self, mark: int) -> list[str]:
        with self.lock:
            return self.events[mark:]

    def mark(self) -> int:
        with self.lock:
            return len(self.events)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    record = Recorder()
    sent = Ack.__call__

    def ack(self: Ack, *args: Any, **kwargs: Any) -> Any:
        record.note("ack")
        return sent(self, *args, **kwargs)

    monkeypatch.setattr(Ack, "__call__", ack)
    return record


@pytest.fixture
def bot(tmp_path: Path, recorder: Recorder) -> Iterator[Sandbox]:
    with demo_world(tmp_path, ready_delay=0.1) as world:
        try:
            _slow_kubernetes(world.kube, recorder)
            _slow_slack(world.sandbox, recorder)
            yield world.sandbox
        finally:
            recorder.gate.set()


def _slow_kubernetes(kube: FakeKubernetes, recorder: Recorder) -> None:
    handle = kube.api.handle

    def slowed(request: Any) -> Any:
        recorder.note("kubernetes")
        recorder.hold("kubernetes")
        time.sleep(0.05)
        return handle(request)

    kube.api.handle = slowed  # type: ignore[method-assign]


def _slow_slack(sandbox: Sandbox, recorder: Recorder) -> None:
    answer = sandbox.slack._answer

    def slowed(method: str, **kwargs: Any) -> Any:
        recorder.note(f"slack:{method}")
        recorder.hold(method)
        if method == "views.open":
            time.sleep(0.2)
        return answer(method, **kwargs)

    sandbox.slack._answer = slowed  # type: ignore[method-assign]


def _quiet(recorder: Recorder) -> None:
    """Wait until nothing (runner, outbox) has called a stand-in for a moment."""
    seen = -1
    for _ in range(100):
        now = recorder.mark()
        if now == seen:
            return
        seen = now
        time.sleep(0.3)


def _acked_first(recorder: Recorder, act: Callable[[], Any], settled: Callable[[], Any]) -> None:
    """`act` is answered; the first thing its request did was the ack, then came the calls."""
    _quiet(recorder)
    mark = recorder.mark()
    response = act()
    assert response.status_code == 200, response.text
    wait_for(settled, what="the work after the ack")
    wait_for(lambda: len(recorder.since(mark)) > 1, what="a call after the ack")
    events = recorder.since(mark)
    calls = [e for e in events if e != "ack"]
    assert events and events[0] == "ack", events
    assert calls, f"the request made no Slack or Kubernetes call at all: {events}"


def test_each_listener_acks_before_any_slack_or_kubernetes_call(
    bot: Sandbox, recorder: Recorder
) -> None:
    alice, bob = bot.person(ALICE), bot.person(BOB)
    recorder.gated = {"views.open", "kubernetes"}
    recorder.gate.clear()
    _quiet(recorder)
    mark = recorder.mark()
    # With views.open and Kubernetes held shut, the command is still answered...
    assert alice.slash("app prod").status_code == 200
    assert recorder.since(mark)[0] == "ack"
    recorder.gate.set()
    view_id = alice.opened_view()
    wait_for(lambda: bot.slack.view(view_id).updates, what="the modal filling in")
    filled = bot.slack.view(view_id).updates
    _acked_first(
        recorder,
        lambda: alice.choose(view_id, "severity", "high"),
        lambda: bot.slack.view(view_id).updates > filled,
    )
    _answer_all(bot, alice, view_id)
    _quiet(recorder)
    _acked_first(
        recorder,
        lambda: alice.submit(view_id),
        lambda: _plan_message(bot),
    )
    plan = _plan_message(bot)
    _acked_first(
        recorder,
        lambda: bob.click(plan.channel, plan.ts, "approve_run"),
        lambda: True,
    )


def APP_CHANNEL(bot: Sandbox) -> str:
    return next(iter(bot.config.environments.values())).incident_channel


def _plan_message(bot: Sandbox) -> Any:
    def found() -> Any:
        for message in bot.slack.messages(APP_CHANNEL(bot)):
            if "approve_run" in str(message.blocks):  # the plan, the message with the button
                return message
        return None

    return wait_for(found, what="the plan with its Approve button")


def test_help_is_answered_while_six_slow_commands_hold_their_slack_calls(
    bot: Sandbox, recorder: Recorder
) -> None:
    people = [bot.person(ALICE), bot.person(BOB)]
    recorder.gated = {"views.open"}
    recorder.gate.clear()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = [pool.submit(people[i % 2].slash, "app prod") for i in range(6)]
        wait_for(lambda: recorder.held == 6, what="six commands inside views.open")
        # Every Bolt listener thread would be busy here if work ran on them.
        helped = people[0].slash("help")
        still_held = not recorder.gate.is_set()
        recorder.gate.set()
        assert all(a.result().status_code == 200 for a in answers)
    assert helped.status_code == 200
    assert "rollback" in helped.text.lower()
    assert still_held, "help was only answered after the slow calls were let go"


def test_rollback_is_acked_while_another_session_holds_the_database_write_lock(
    bot: Sandbox, recorder: Recorder
) -> None:
    """The command's once-only record is written after its ack, so a held lock never delays it."""
    alice = bot.person(ALICE)
    _quiet(recorder)
    path = bot.settings.database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # as a long write of another request would
    try:
        mark = recorder.mark()
        answered = alice.slash("app prod")
        opened_while_locked = "slack:views.open" in recorder.since(mark)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answered.status_code == 200, answered.text
    assert recorder.since(mark)[0] == "ack"
    assert not opened_while_locked  # the work after the ack did wait for the lock
    view_id = alice.opened_view()
    wait_for(lambda: bot.slack.view(view_id).updates, what="the modal once the lock is free")


def test_a_retried_command_is_told_after_its_ack_when_only_the_database_knew_it(
    bot: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process got the trigger first: this one acks, then says so and opens nothing."""
    alice = bot.person(ALICE)
    trigger = "1700000000.123456789012.0123456789abcdef"
    assert bot.process.store.entries.receive(f"command:{trigger}")  # the other process
    monkeypatch.setattr(platform, "_trigger", lambda: trigger)
    answered = alice.slash("app prod")
    assert answered.status_code == 200
    told = wait_for(
        lambda: [
            c for c in bot.slack.calls_to("chat.postEphemeral") if "already received" in str(c.args)
        ],
        what="the repeat told after the ack",
    )
    assert "the repeat changed nothing" in str(told[0].args)
    assert not bot.slack.calls_to("views.open")


def test_a_command_the_full_pool_cannot_take_is_refused_in_its_ack(
    bot: Sandbox, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy is said in the answer itself: no Slack call on the thread that answers Slack."""
    later = bot.process.deps.later
    room = later.has_room
    monkeypatch.setattr(later, "has_room", lambda: False)
    _quiet(recorder)
    mark = recorder.mark()
    answered = bot.person(ALICE).slash("app prod")
    assert answered.status_code == 200
    assert "busy" in answered.json()["text"] and "did nothing" in answered.json()["text"]
    _quiet(recorder)
    assert recorder.since(mark) == ["ack"], recorder.since(mark)
    monkeypatch.setattr(later, "has_room", room)
    assert bot.person(ALICE).slash("app prod").status_code == 200  # the same person, later
    wait_for(lambda: bot.slack.calls_to("views.open"), what="the form once there is room")


def _filled_form(bot: Sandbox, recorder: Recorder) -> str:
    """Open the form and answer it; return its view id once every answer is rendered."""
    alice = bot.person(ALICE)
    assert alice.slash("app prod").status_code == 200
    view_id = alice.opened_view()
    wait_for(lambda: bot.slack.view(view_id).updates, what="the modal filling in")
    _answer_all(bot, alice, view_id)
    _quiet(recorder)
    return view_id


def _answer_all(bot: Sandbox, person: Any, view_id: str) -> None:
    """Choose every answer; return once the work after their acks is done.

    Each answer re-renders the form after its ack. A submission sent before the last
    re-render is an outdated form and is refused (a loaded CI machine once took longer
    than `_quiet`'s pause to re-render), so wait for the bot's work pool to be idle.
    """
    for block_id, value in ANSWERS.items():
        person.choose(view_id, block_id, value)

    def idle() -> bool:
        pool = bot.process.deps.later.snapshot()
        return pool.queued == 0 and pool.running == 0

    wait_for(idle, what="the form re-rendered with every answer")


class _WriteLock:
    """Another session's `BEGIN IMMEDIATE` on the bot's SQLite file, as a long write holds it."""

    def __init__(self, bot: Sandbox) -> None:
        path = bot.settings.database_url.removeprefix("sqlite:///")
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=30)

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, *exc: object) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


def test_form_submission_is_acked_while_another_session_holds_the_database_write_lock(
    bot: Sandbox, recorder: Recorder
) -> None:
    """The form's once-only record and the incident are written after the ack."""
    view_id = _filled_form(bot, recorder)
    _quiet(recorder)
    with _WriteLock(bot):
        mark = recorder.mark()
        answered = bot.person(ALICE).submit(view_id)
        written_while_locked = bot.process.store.runs.find()
    assert answered.status_code == 200, answered.text
    assert answered.json()["response_action"] == "update"
    assert "Creating incident" in str(answered.json()["view"])
    assert recorder.since(mark)[0] == "ack"
    assert written_while_locked == []  # the work after the ack waited for the lock
    _plan_message(bot)  # and then opened the incident
    assert len(bot.process.store.runs.find()) == 1


def test_a_replayed_form_is_told_after_its_ack_when_only_the_database_knew_it(
    bot: Sandbox, recorder: Recorder
) -> None:
    """Another process took the submission first: this one acks, then says so and opens
    nothing."""
    view_id = _filled_form(bot, recorder)
    view = bot.slack.view(view_id)
    assert bot.process.store.entries.receive(f"view:{view_id}:{view.hash}")  # the other one
    answered = bot.person(ALICE).submit(view_id)
    assert answered.status_code == 200
    assert "Creating incident" in str(answered.json()["view"])
    wait_for(
        lambda: "the repeat changed nothing" in str(bot.slack.view(view_id).view),
        what="the modal saying the form was already submitted",
    )
    assert "Already submitted" in str(bot.slack.view(view_id).view)
    assert bot.process.store.runs.find() == []


def test_a_form_for_a_target_another_incident_holds_is_refused_after_its_ack(
    bot: Sandbox, recorder: Recorder
) -> None:
    """The lock is checked by the flow that takes it, after the ack; the modal says who holds
    the target and nothing is requested."""
    first = _filled_form(bot, recorder)
    bot.person(ALICE).submit(first)
    holder = _plan_message(bot) and bot.process.store.runs.find()[0].incident_id
    second = _filled_form(bot, recorder)
    answered = bot.person(ALICE).submit(second)
    assert answered.status_code == 200
    assert "Creating incident" in str(answered.json()["view"])
    wait_for(
        lambda: f"already being rolled back in {holder}" in str(bot.slack.view(second).view),
        what="the modal naming the incident that holds the target",
    )
    assert "Nothing was requested" in str(bot.slack.view(second).view)
    assert len(bot.process.store.runs.find()) == 1


def test_cancel_is_acked_while_another_session_holds_the_database_write_lock(
    bot: Sandbox, recorder: Recorder
) -> None:
    """`/rollback cancel` finds, checks and cancels the run after its ack, then tells. It is
    typed in a channel the bot is not in, where Slack shows no ephemeral (channel_not_found),
    so the person is told by DM."""
    view_id = _filled_form(bot, recorder)
    bot.person(ALICE).submit(view_id)
    _plan_message(bot)
    run = bot.process.store.runs.find()[0]
    _quiet(recorder)
    with _WriteLock(bot):
        mark = recorder.mark()
        answered = bot.person(ALICE).slash(f"cancel {run.incident_id}")
        state_while_locked = bot.process.store.runs.get(run.id)
    assert answered.status_code == 200
    assert "Cancelling the rollback" in answered.json()["text"]
    assert recorder.since(mark)[0] == "ack"
    assert state_while_locked is not None and state_while_locked.state == "requested"
    dm = "D" + ALICE[1:]
    told = wait_for(
        lambda: [
            m.text
            for c in bot.slack.channels()
            if c.id == dm  # the DM exists once the bot wrote in it
            for m in bot.slack.messages(dm)
            if "Cancelled the rollback" in m.text
        ],
        what="the person told by DM that the rollback was cancelled",
    )
    assert run.incident_id in told[0]
    assert bot.process.store.runs.get(run.id).state == "cancelled"  # type: ignore[union-attr]


@pytest.mark.parametrize("button", ["reject_run", "cancel_run"])
def test_reject_and_cancel_redraw_the_thread_from_the_outbox_after_the_ack(
    bot: Sandbox, recorder: Recorder, button: str
) -> None:
    """The click acks, changes the run, and the card and plan are redrawn by the outbox's
    sender (a durable `run.changed` message), not on the click's thread."""
    view_id = _filled_form(bot, recorder)
    answered = bot.person(ALICE).submit(view_id)
    assert "Creating incident" in answered.text, answered.text  # not refused as outdated
    plan = _plan_message(bot)
    run = bot.process.store.runs.find()[0]
    clicker = bot.person(BOB if button == "reject_run" else ALICE)
    _acked_first(
        recorder,
        lambda: clicker.click(plan.channel, plan.ts, button),
        lambda: bot.process.store.runs.get(run.id).state in ("rejected", "cancelled"),  # type: ignore[union-attr]
    )
    sent = wait_for(
        lambda: [
            m
            for m in bot.process.store.outbox.messages(run.id)
            if m.kind == "run.changed" and m.state == "sent"
        ],
        what="the redraw delivered by the outbox",
    )
    assert len(sent) == 1
    wait_for(
        lambda: "approve_run" not in str(bot.slack.message(plan.channel, plan.ts).blocks),
        what="the plan without its Approve button",
    )
