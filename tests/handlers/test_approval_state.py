"""Approval state said exactly (N of M, who approved, who still may, the deadline); stale plans."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CAROL, CHANNEL
from tests.fakes.targets import write_script
from tests.fakes.thread import card, request_rollback, text_of
from tests.fakes.waiting import wait_for


def test_one_of_two_approvals_is_said_on_card_plan_and_status(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(approvals_required=2)
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert "0 of 2 approvals" in text_of(card(sandbox))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: "1 of 2 approvals" in text_of(card(sandbox)), what="the card to count")
    said = text_of(card(sandbox))
    assert f"1 of 2 approvals (<@{BOB}>)" in said
    assert f"may still approve: <@{CAROL}> <!subteam^SDBAS00001>" in said
    assert "Approved by" not in said  # not while one more is needed
    # The deadline as a date token each reader's client renders; no count of minutes that
    # would go stale on screen.
    assert re.search(r"expires <!date\^\d+\^[^|>]+\|[^>]+>", said)
    assert "min left" not in said
    # the plan message is edited after the card (one outbox message each): wait for it too
    wait_for(
        lambda: f"1 of 2 approvals (<@{BOB}>)" in text_of(sandbox.slack.message(CHANNEL, plan.ts)),
        what="the plan message to count",
    )
    incident = sandbox.process.store.runs.find()[0].incident_id
    status = sandbox.person(ALICE).slash(f"status {incident}").text
    assert f"1 of 2 approvals (<@{BOB}>)" in status and f"may still approve: <@{CAROL}>" in status


def test_stale_plan_is_told_to_everyone_with_replan_and_approve_is_withdrawn(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    write_script(script, _label="a newer deploy")  # the plan built now differs
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    thread = wait_for(
        lambda: [
            m for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts) if "out of date" in m.text
        ],
        what="the stale announcement",
    )
    said = text_of(thread[0])
    assert f"<@{ALICE}>" in said and f"<@{BOB}>" in said and f"<@{CAROL}>" in said
    assert any(
        e.get("action_id") == "replan_run" for b in thread[0].blocks for e in b.get("elements", [])
    )
    buttons = [
        e["action_id"]
        for b in sandbox.slack.message(CHANNEL, plan.ts).blocks
        for e in b.get("elements", [])
        if "action_id" in e
    ]
    assert "approve_run" not in buttons and "replan_run" in buttons
    store = sandbox.process.store
    assert store.runs.find()[0].state == "requested"

    alice = sandbox.person(ALICE)
    payload = alice.click_payload(CHANNEL, thread[0].ts, "replan_run")
    alice.last_trigger = payload["trigger_id"]
    sandbox.platform.interaction(payload)
    wait_for(lambda: store.runs.find()[0].state == "cancelled", what="the stale request withdrawn")
    view_id = alice.opened_view()
    wait_for(
        lambda: any(
            b.get("block_id") == "severity" for b in sandbox.slack.view(view_id).view["blocks"]
        ),
        what="the form",
    )
    assert alice.submit(view_id).status_code == 200
    wait_for(lambda: len(store.runs.find()) == 2, what="the new request")


def test_replan_after_a_newer_deploy_never_preselects_the_version_the_incident_leaves(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    """Requested rev 2 → rev 1; rev 3 deployed meanwhile: the re-plan's default is not rev 2,
    which would be 'the previous version' now but is what the incident was opened to leave."""
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    store = sandbox.process.store
    incident = store.runs.find()[0].incident_id
    write_script(script, _current="3", _label="rev 3 deployed")  # a newer deploy since
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    stale = wait_for(
        lambda: next(
            (m for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts) if "out of date" in m.text),
            None,
        ),
        what="the stale announcement",
    )
    alice = sandbox.person(ALICE)
    payload = alice.click_payload(CHANNEL, stale.ts, "replan_run")
    alice.last_trigger = payload["trigger_id"]
    sandbox.platform.interaction(payload)
    view_id = alice.opened_view()
    point = wait_for(
        lambda: next(
            (b for b in sandbox.slack.view(view_id).view["blocks"] if b.get("block_id") == "point"),
            None,
        ),
        what="the form's points",
    )
    assert point["element"]["initial_option"]["value"] == "1"
    labels = {o["value"]: o["text"]["text"] for o in point["element"]["options"]}
    assert labels["2"].startswith(f"{incident} rolls back from this · rev 2")
