"""Slack refusing the incident thread leaves no orphan; `/rollback cancel INC-…` for people.

When Slack will not take the thread's first post (the bot not invited, a 500
after the client's retries, a dropped connection) or its plan post, the run
is withdrawn with the reason, the target is free again, and the person reads
in the modal, or by DM when the modal is gone, what happened and what to do.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.harness import Sandbox
from sandbox.slack.models import Call
from tests.fakes.config import ALICE, BOB, CHANNEL, MALLORY
from tests.fakes.thread import (
    card,
    direct_messages,
    request_rollback,
    settled,
    submit_form,
    text_of,
    withdrawn,
)
from tests.fakes.waiting import wait_for


def modal_text(sandbox: Sandbox, view_id: str) -> str:
    return json.dumps(sandbox.slack.view(view_id).view.get("blocks", []))


def final_modal(sandbox: Sandbox, view_id: str) -> str:
    """Wait for the modal's last word (the submission's own "Creating incident…" comes first)."""
    endings = ("Not opened", "Incident created", "Not requested")
    wait_for(
        lambda: sandbox.slack.view(view_id).view.get("title", {}).get("text") in endings,
        what="the modal to say how it ended",
    )
    return modal_text(sandbox, view_id)


def then_a_new_request_works(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert plan is not None
    assert sum(r.state == "requested" for r in sandbox.process.store.runs.find()) == 1


def test_bot_not_in_the_channel_is_told_in_the_modal_with_how_to_invite_it(
    sandbox: Sandbox,
) -> None:
    sandbox.slack.fail_next("chat.postMessage", error="not_in_channel", status=200)
    view_id = submit_form(sandbox)
    text = final_modal(sandbox, view_id)
    bot = sandbox.slack.workspace.bot_user_id
    assert "not_in_channel" in text
    assert f"Invite <@{bot}> to <#{CHANNEL}>" in text and f"/invite <@{bot}>" in text
    assert "app is free again" in text
    withdrawn(sandbox)
    then_a_new_request_works(sandbox)


def test_slack_failing_after_its_retries_is_told_and_frees_the_target(sandbox: Sandbox) -> None:
    sandbox.slack.fail_next("chat.postMessage", error="fatal_error", status=500, times=3)
    view_id = submit_form(sandbox)
    text = final_modal(sandbox, view_id)
    assert "fatal_error" in text and "Request the rollback again in a minute" in text
    assert [c.status for c in sandbox.slack.calls_to("chat.postMessage")] == [500, 500, 500]
    withdrawn(sandbox)
    then_a_new_request_works(sandbox)


def test_dropped_connections_are_told_and_free_the_target(sandbox: Sandbox) -> None:
    drops = {"left": 3}

    def drop(call: Call) -> None:
        if call.method == "chat.postMessage" and drops["left"] > 0:
            drops["left"] -= 1
            raise ConnectionAbortedError("closing without an answer, as a dropped connection")

    sandbox.slack.on_call(drop)
    view_id = submit_form(sandbox)
    text = final_modal(sandbox, view_id)
    assert "connection to Slack failed" in text
    withdrawn(sandbox)
    then_a_new_request_works(sandbox)


def test_plan_refused_after_the_card_strikes_the_card_and_withdraws(sandbox: Sandbox) -> None:
    def refuse_the_plan(call: Call) -> None:
        if call.method == "chat.postMessage" and "thread_ts" not in call.args and call.ok:
            sandbox.slack.fail_next("chat.postMessage", error="restricted_action", status=200)

    sandbox.slack.on_call(refuse_the_plan)
    view_id = submit_form(sandbox)
    text = final_modal(sandbox, view_id)
    assert "restricted_action" in text and "fix `incident_channel`" in text
    withdrawn(sandbox)
    (struck,) = [m for m in sandbox.slack.messages(CHANNEL) if m.thread_ts is None]
    assert "not opened, nothing will run" in struck.text and "restricted_action" in struck.text


def test_modal_gone_by_then_the_person_is_told_by_direct_message(sandbox: Sandbox) -> None:
    def modal_closed(call: Call) -> None:
        if call.method == "chat.postMessage" and not call.ok:
            sandbox.slack.fail_next("views.update", error="not_found", status=200)

    sandbox.slack.on_call(modal_closed)
    sandbox.slack.fail_next("chat.postMessage", error="not_in_channel", status=200)
    submit_form(sandbox)
    dm = wait_for(
        lambda: [t for t in direct_messages(sandbox, ALICE) if "Invite" in t],
        what="the direct message",
    )
    assert "not_in_channel" in dm[0]
    withdrawn(sandbox)


def cancel(sandbox: Sandbox, user: str, incident_id: str) -> str:
    """Send `/rollback cancel`; return what the person is told once it is done (the ack only
    says it was received)."""
    before = len(told_to(sandbox, user))
    response = sandbox.person(user).slash(f"cancel {incident_id}")
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == f":hourglass_flowing_sand: Cancelling the rollback of {incident_id}…"
    return wait_for(lambda: told_to(sandbox, user)[before:], what="the cancel's answer")[0]


def told_to(sandbox: Sandbox, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals(CHANNEL) if e.user == user]


def incident_id(sandbox: Sandbox) -> str:
    return sandbox.process.store.runs.find()[0].incident_id


@pytest.mark.parametrize("who", [ALICE, BOB])
def test_requester_or_approver_cancels_by_incident_id(sandbox: Sandbox, who: str) -> None:
    request_rollback(sandbox, sandbox.person(ALICE))
    said = cancel(sandbox, who, incident_id(sandbox))
    assert "Cancelled the rollback of app in prod" in said
    wait_for(lambda: "Cancelled" in text_of(card(sandbox)), what="the card to say cancelled")
    assert sandbox.process.store.runs.find()[0].state == "cancelled"
    assert sandbox.process.store.runs.lock_holder(environment="prod", targets=["app"]) is None


def test_cancel_by_someone_else_is_refused_and_changes_nothing(sandbox: Sandbox) -> None:
    request_rollback(sandbox, sandbox.person(ALICE))
    said = cancel(sandbox, MALLORY, incident_id(sandbox))
    assert "Not cancelled: only the requester or an approver can cancel" in said
    assert sandbox.process.store.runs.find()[0].state == "requested"


def test_cancel_of_a_finished_rollback_or_unknown_incident_is_refused(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: sandbox.process.store.runs.find()[0].state == "succeeded", what="the run")
    said = cancel(sandbox, ALICE, incident_id(sandbox))
    assert "is succeeded; it can no longer be cancelled" in said
    assert "there is no incident INC-20000101-000000" in cancel(
        sandbox, ALICE, "INC-20000101-000000"
    )


def test_cancel_needs_an_incident_id(sandbox: Sandbox) -> None:
    text = str(sandbox.person(ALICE).slash("cancel app").json())
    assert "`cancel` needs one incident id" in text


def test_modal_text_tells_a_withdrawn_request_from_a_break_glass_run_that_goes_on() -> None:
    from bot.application.requests import ThreadNotOpened
    from handlers.modals import not_opened_text

    withdrawn_text = not_opened_text("app", ThreadNotOpened("Slack refused", "Invite the bot."))
    assert "withdrawn and app is free again" in withdrawn_text
    assert "*What to do:* Invite the bot." in withdrawn_text
    going_on = ThreadNotOpened("Slack refused", "It goes on.", withdrawn=False)
    assert "free again" not in not_opened_text("app", going_on)
    assert "It goes on." in not_opened_text("app", going_on)


def test_a_late_answer_change_never_replaces_what_the_submission_said(sandbox: Sandbox) -> None:
    sandbox.slack.fail_next("chat.postMessage", error="not_in_channel", status=200)
    alice = sandbox.person(ALICE)
    view_id = submit_form(sandbox)
    final_modal(sandbox, view_id)
    updates = len(sandbox.slack.calls_to("views.update"))
    late = alice._actions_payload(
        view=alice.view(view_id),
        actions=[
            {
                "action_id": "severity_choice",
                "block_id": "severity",
                "selected_option": {"value": "low"},
                "action_ts": "9999999999.0",
            }
        ],
    )
    assert sandbox.platform.interaction(late).status_code == 200
    settled(sandbox)  # the late click's work, a render had it made one, has run
    assert len(sandbox.slack.calls_to("views.update")) == updates
    assert sandbox.slack.view(view_id).view["title"]["text"] == "Not opened"
