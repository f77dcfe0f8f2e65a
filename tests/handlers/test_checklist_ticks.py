"""Checklist ticks count per person and per item, even from an older copy of the message."""

from __future__ import annotations

import copy
import time
from typing import Any

from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CAROL, CHANNEL, DAVE, MALLORY
from tests.fakes.thread import card, request_rollback
from tests.fakes.waiting import wait_for


def _checklist(sandbox: Sandbox) -> Any:
    """The checklist once posted and recorded: the bot records a message's ts right after
    Slack answers the post, and a tick is looked up by it (as a person's tick, which
    cannot come within those milliseconds, always is)."""
    message = wait_for(
        lambda: next(
            (
                m
                for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)
                if m.text == "Post-rollback verification checklist"
            ),
            None,
        ),
        what="the checklist",
    )
    store = sandbox.process.store
    wait_for(
        lambda: store.posts.run_of(channel=CHANNEL, ts=message.ts),
        what="the checklist's ts recorded",
    )
    return message


def _tick_on_copy(sandbox: Sandbox, user: str, copy_of: Any, values: list[str]) -> None:
    """What a client still showing `copy_of` sends when its boxes are left as `values`."""
    person = sandbox.person(user)
    box = next(b for b in copy_of.blocks if b.get("block_id") == "verify_checklist")
    options = [o for o in box["accessory"]["options"] if o["value"] in values]
    action = {
        "action_id": "verify_tick",
        "block_id": "verify_checklist",
        "type": "checkboxes",
        "selected_options": options,
        "action_ts": str(time.time()),
    }
    payload = person._message_payload(copy_of, [action])
    assert sandbox.platform.interaction(payload).status_code == 200


def _ticks(sandbox: Sandbox) -> dict[str, str]:
    store = sandbox.process.store
    incident_id = store.runs.find()[0].incident_id
    now: dict[str, str] = {}
    for e in store.events.of(incident_id):
        if e.kind == "checklist.tick":
            if e.detail["checked"]:
                now[e.detail["item"]] = e.actor or ""
            else:
                now.pop(e.detail["item"], None)
    return now


def test_ticks_from_two_stale_copies_keep_everyone_elses(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    checklist = _checklist(sandbox)
    first = copy.deepcopy(sandbox.slack.message(CHANNEL, checklist.ts))  # nothing ticked
    sandbox.person(CAROL).tick(CHANNEL, checklist.ts, "verify_tick", ["core"])
    wait_for(lambda: _ticks(sandbox) == {"core": CAROL}, what="Carol's tick")
    _tick_on_copy(sandbox, BOB, first, ["auth"])  # Bob's copy never showed Carol's tick
    wait_for(lambda: len(_ticks(sandbox)) == 2, what="Bob's tick")
    _tick_on_copy(sandbox, DAVE, first, ["external"])  # a second stale copy, a group approver
    wait_for(lambda: len(_ticks(sandbox)) == 3, what="Dave's tick")
    assert _ticks(sandbox) == {"core": CAROL, "auth": BOB, "external": DAVE}
    wait_for(
        lambda: all(
            f"✔ <@{who}>" in str(sandbox.slack.message(CHANNEL, checklist.ts).blocks)
            for who in (CAROL, BOB, DAVE)
        ),
        what="who ticked what, on the checklist",
    )


def test_someone_not_involved_may_not_tick(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    checklist = _checklist(sandbox)
    sandbox.person(MALLORY).tick(CHANNEL, checklist.ts, "verify_tick", ["auth"])
    told = wait_for(
        lambda: [e.text for e in sandbox.slack.ephemerals(CHANNEL) if e.user == MALLORY],
        what="the refusal",
    )
    assert "Only the requester and the approvers" in told[0]
    assert _ticks(sandbox) == {}
