"""Every message that states production's state is redrawn when a person changes it.

After a failure, Turn maintenance off, Mark resolved and Retry change what is true of
production; the failure announcement they are clicked on, the incident card, the plan and the
progress message all say the run's state, so each is redrawn once through the outbox, from the
one text they all render (`handlers.blocks.outcome_now`). Driven through the real Bolt app and
fake Slack (sandbox/harness.py), asserting on the exact chat.update calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.harness import Sandbox
from sandbox.slack import Message
from sandbox.slack.models import Call
from sandbox.web import Reply, WebStub
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.targets import write_script
from tests.fakes.thread import ANSWERS, card, request_rollback, settled, text_of
from tests.fakes.waiting import wait_for

ON = "maintenance mode is ON"


@dataclass
class Failed:
    """A failed run's thread: the messages that state its state, and the Slack calls so far."""

    sandbox: Sandbox
    card: str
    plan: str
    progress: str
    broadcast: str
    web: WebStub

    def click(self, user: str, action: str) -> list[Call]:
        """Click `action` on the failure announcement; return the chat.update calls it made."""
        settled(self.sandbox, outbox=True)
        before = len(self.sandbox.slack.calls_to("chat.update"))
        self.sandbox.person(user).click(CHANNEL, self.broadcast, action)
        settled(self.sandbox, outbox=True)
        return self.sandbox.slack.calls_to("chat.update")[before:]

    def said(self, ts: str) -> str:
        return text_of(self.sandbox.slack.message(CHANNEL, ts))


def updated(calls: list[Call]) -> list[str]:
    """The ts of each message updated, in order."""
    return [str(c.args["ts"]) for c in calls]


def text(call: Call) -> str:
    """All the text a chat.update call sets."""
    raw = call.args.get("blocks") or []
    blocks = json.loads(raw) if isinstance(raw, str) else raw
    return str(call.args.get("text", "")) + json.dumps(blocks)


@pytest.fixture
def failed(make_sandbox: Callable[..., Sandbox], script: Path) -> Iterator[Failed]:
    """A rollback whose status step fails, leaving maintenance on as the form asked."""
    write_script(script, status=["permanent", "ok"])
    with WebStub() as web:
        web.route("POST", "/maintenance", Reply(200, json={"ok": True}))
        sandbox = make_sandbox(maintenance={"url": f"{web.url}/maintenance"})
        answers = {**ANSWERS, "options": ["leave_maintenance_on"]}
        plan = request_rollback(sandbox, sandbox.person(ALICE), answers=answers)
        sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
        store = sandbox.process.store
        wait_for(lambda: store.runs.find()[0].state == "failed", what="the run to fail")
        thread = card(sandbox).ts

        def announced() -> Message | None:
            replies = sandbox.slack.thread(CHANNEL, thread)
            return next((m for m in replies if m.reply_broadcast), None)

        broadcast = wait_for(announced, what="the failure announcement")
        progress = next(
            m
            for m in sandbox.slack.thread(CHANNEL, thread)
            if m.text.startswith("Rollback progress")
        )
        yield Failed(sandbox, thread, plan.ts, progress.ts, broadcast.ts, web)


def test_turning_maintenance_off_redraws_announcement_card_plan_and_progress(
    failed: Failed,
) -> None:
    assert ON in failed.said(failed.card) and ON in failed.said(failed.progress)
    calls = failed.click(ALICE, "turn_maintenance_off")
    assert updated(calls) == [failed.broadcast, failed.card, failed.plan, failed.progress]
    for call in calls:
        assert ON not in text(call), text(call)
    for ts in (failed.broadcast, failed.card, failed.progress):
        assert "maintenance mode turned off since the failure" in failed.said(ts)
    # turning it off is no longer left undone, anywhere
    assert "Not run: Maintenance mode off" not in failed.said(failed.card)
    assert [r.json()["enabled"] for r in failed.web.calls("POST", "/maintenance")] == [True, False]
    incident = failed.sandbox.process.store.runs.find()[0].incident_id
    status = failed.sandbox.person(ALICE).slash(f"status {incident}").text
    assert ON not in status and "maintenance mode turned off since the failure" in status


def test_marking_a_failure_resolved_says_who_and_when_on_card_plan_and_progress(
    failed: Failed,
) -> None:
    calls = failed.click(BOB, "mark_resolved")
    assert updated(calls) == [failed.broadcast, failed.card, failed.plan, failed.progress]
    resolved = f"Failed, resolved by <@{BOB}> at <!date^"
    for ts in (failed.card, failed.plan, failed.progress):
        said = failed.said(ts)
        assert resolved in said, said
        assert "manual intervention required" not in said.lower(), said
    assert f"Resolved by <@{BOB}> at <!date^" in failed.said(failed.broadcast)
    assert "manual intervention required" not in failed.said(failed.broadcast).lower()
    rca = wait_for(
        lambda: [f for f in failed.sandbox.slack.files() if f.name.endswith("-rca.md")][1:],
        what="the RCA template as of the resolution",
    )
    (resolved_rca,) = rca
    assert "Failure marked resolved by " in resolved_rca.text
    outcome = next(line for line in resolved_rca.text.splitlines() if "**Outcome**" in line)
    assert outcome.startswith("- **Outcome**: failed — step 4 (Status) failed: status broke. Ran:")


def test_a_retry_that_succeeds_leaves_no_message_saying_failed_or_running_again(
    failed: Failed,
) -> None:
    sandbox = failed.sandbox
    calls = failed.click(BOB, "retry_failed_step")
    assert updated(calls)[:3] == [failed.broadcast, failed.card, failed.plan]
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the retry to succeed")
    settled(sandbox, outbox=True)
    wait_for(lambda: len(sandbox.slack.files()) == 4, what="the RCA template of the retry")
    announcement = failed.said(failed.broadcast)
    assert "was retried* by <@" in announcement and "and succeeded at <!date^" in announcement
    assert "running again" not in announcement and "again, progress" not in announcement
    assert "Rolled back" in failed.said(failed.card) and "Rolled back" in failed.said(failed.plan)
    assert "Rolled back" in failed.said(failed.progress)
    for ts in (failed.card, failed.plan, failed.progress, failed.broadcast):
        assert "Failed" not in failed.said(ts) and ON not in failed.said(ts)
    rca = [f for f in sandbox.slack.files() if f.name.endswith("-rca.md")]
    assert len(rca) == 2
    assert "- **Outcome**: succeeded" in rca[-1].text


def test_leaving_maintenance_on_redraws_every_message_that_states_it(failed: Failed) -> None:
    calls = failed.click(BOB, "leave_maintenance_on")
    assert updated(calls) == [failed.broadcast, failed.card, failed.plan, failed.progress]
    assert f"Maintenance stays on: <@{BOB}> decided." in failed.said(failed.broadcast)
    assert ON in failed.said(failed.card) and ON in failed.said(failed.progress)


def test_cancel_redraws_the_card_and_the_plan_once_each(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    settled(sandbox, outbox=True)
    before = len(sandbox.slack.calls_to("chat.update"))
    sandbox.person(ALICE).click(CHANNEL, plan.ts, "cancel_run")
    wait_for(lambda: sandbox.process.store.runs.find()[0].state == "cancelled", what="cancel")
    settled(sandbox, outbox=True)
    calls = sandbox.slack.calls_to("chat.update")[before:]
    assert updated(calls) == [card(sandbox).ts, plan.ts]
    for message in (card(sandbox), sandbox.slack.message(CHANNEL, plan.ts)):
        assert f"Cancelled by <@{ALICE}>" in text_of(message)
        assert "Awaiting approval" not in text_of(message)
