"""A failed rollback is loud and says what to do next; a success is one calm line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.sandbox.harness import Sandbox
from tests.bot.conftest import ALICE, BOB
from tests.fakes.targets import write_script
from tests.fakes.waiting import wait_for
from tests.handlers.conftest import CHANNEL, card, request_rollback, text_of


def _finish(sandbox: Sandbox, state: str) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.deps.store
    wait_for(lambda: store.runs()[0].state == state, what=f"the run to be {state}")
    wait_for(lambda: sandbox.slack.files(), what="the RCA template")


def test_failure_is_broadcast_to_the_channel_with_people_state_and_a_replan_button(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    sandbox = make_sandbox()
    _finish(sandbox, "failed")
    broadcast = [m for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts) if m.reply_broadcast]
    assert len(broadcast) == 1
    said = text_of(broadcast[0])
    assert f"<@{ALICE}>" in said and f"<@{BOB}>" in said
    assert "the rollback of *app* from rev 2 to rev 1 failed" in said
    assert "*What failed:* step 3 (Status) failed: status broke" in said
    assert "*Production now:* rolled back (undo)" in said  # dotted names become labels
    assert "*Left undone:* nothing" in said
    assert [m for m in sandbox.slack.messages(CHANNEL) if m.thread_ts is None] == [card(sandbox)]

    # Re-plan opens the form again with the answers given before
    alice = sandbox.person(ALICE)
    payload = alice.click_payload(CHANNEL, broadcast[0].ts, "replan_run")
    alice.last_trigger = payload["trigger_id"]
    assert sandbox.platform.interaction(payload).status_code == 200
    view_id = alice.opened_view()
    view = wait_for(lambda: _filled(sandbox.slack.view(view_id).view), what="the re-plan form")
    blocks = {b.get("block_id"): b for b in view["blocks"]}
    assert blocks["severity"]["element"]["initial_option"]["value"] == "high"
    assert blocks["q_severe_impact"]["element"]["initial_option"]["value"] == "yes"
    response = alice.submit(view_id)
    assert response.status_code == 200, response.text
    store = sandbox.process.deps.store
    wait_for(lambda: len(store.runs()) == 2, what="the new request")
    assert store.runs()[0].state == "requested"


def _filled(view: dict[str, Any]) -> dict[str, Any] | None:
    return view if any(b.get("block_id") == "severity" for b in view["blocks"]) else None


def test_success_is_one_line_to_the_channel(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox()
    _finish(sandbox, "succeeded")
    top = [m for m in sandbox.slack.messages(CHANNEL) if m.thread_ts is None]
    assert len(top) == 2
    line = next(m for m in top if m is not card(sandbox) and not m.blocks)
    assert "*app* from rev 2 to rev 1 rolled back" in line.text
    assert not any(m.reply_broadcast for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts))
