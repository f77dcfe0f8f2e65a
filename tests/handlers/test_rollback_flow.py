"""A rollback from /rollback to the RCA template, through the real Bolt app over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CAROL, CHANNEL, DAVE, MALLORY
from tests.fakes.targets import script_log, write_script
from tests.fakes.thread import card, recommendation_of, request_rollback, settled, text_of
from tests.fakes.waiting import wait_for


def run_state(sandbox: Sandbox) -> str:
    runs = sandbox.process.store.runs.find()
    return runs[0].state if runs else "none"


def ephemeral_to(sandbox: Sandbox, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals(CHANNEL) if e.user == user]


def test_modal_opens_with_the_previous_revision_and_the_recommendation_updates_live(
    sandbox: Sandbox,
) -> None:
    alice = sandbox.person(ALICE)
    assert alice.slash("app prod").status_code == 200
    view_id = alice.opened_view()
    view = wait_for(lambda: (v := sandbox.slack.view(view_id)).updates and v.view, what="the modal")
    point = next(b for b in view["blocks"] if b.get("block_id") == "point")
    assert point["element"]["initial_option"]["value"] == "1"
    alice.choose(view_id, "severity", "critical")
    alice.choose(view_id, "q_functional", "no")
    alice.choose(view_id, "q_data_at_risk", "yes")
    text = wait_for(
        lambda: "Immediate rollback" in (t := recommendation_of(sandbox, view_id)) and t,
        what="the recommendation",
    )
    assert "Critical*: respond immediately" in text and "within immediate" not in text


def test_rapid_answers_end_with_the_newest_recommendation(sandbox: Sandbox) -> None:
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for flip in ("yes", "no", "yes", "no", "yes", "no"):
        alice.choose(view_id, "q_functional", "no")
        alice.choose(view_id, "q_data_at_risk", flip)
    alice.choose(view_id, "q_severe_impact", "no")  # only the last click completes this answer
    wait_for(
        lambda: "Monitor and fix forward" in recommendation_of(sandbox, view_id),
        what="the last answer's recommendation",
    )
    settled(sandbox)  # every click's render has run: an overtaken one would show now
    assert "Monitor and fix forward" in recommendation_of(sandbox, view_id)
    assert [c.error for c in sandbox.slack.calls_to("views.update") if not c.ok] == []


def test_submission_with_unanswered_questions_gets_field_errors_and_creates_nothing(
    sandbox: Sandbox,
) -> None:
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    alice.choose(view_id, "q_functional", "no")
    response = alice.submit(view_id)
    body = response.json()
    assert body["response_action"] == "errors"
    assert set(body["errors"]) == {"severity", "q_data_at_risk"}
    assert sandbox.process.store.runs.find() == []


def test_whole_rollback_from_command_to_rca_template(sandbox: Sandbox, script: Path) -> None:
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    plan = request_rollback(sandbox, alice)
    plan_text = text_of(plan)
    assert "1. Stop workers · _prepare_" in plan_text
    assert f"<@{BOB}>" in plan_text and "<!subteam^SDBAS00001>" in plan_text
    approve = next(b for b in plan.blocks if b.get("block_id") == "approval_buttons")
    assert approve["elements"][0]["confirm"]["confirm"]["text"] == "Approve and run"
    assert "Awaiting approval" in text_of(card(sandbox))

    alice.click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: ephemeral_to(sandbox, ALICE), what="the refusal")
    assert "a second person must approve" in ephemeral_to(sandbox, ALICE)[0]
    assert run_state(sandbox) == "requested"

    bob.click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: run_state(sandbox) == "succeeded", what="the run to succeed")
    assert script_log(script) == ["stop_workers", "undo", "status", "start_workers"]
    wait_for(lambda: sandbox.slack.files(), what="the RCA template")

    card_text = text_of(card(sandbox))
    assert f"Approved by <@{BOB}>" in card_text and "Rolled back" in card_text
    thread = sandbox.slack.thread(CHANNEL, card(sandbox).ts)
    progress = next(m for m in thread if m.text.startswith("Rollback progress"))
    assert progress.edits >= 8
    assert ":white_check_mark: 2. *Undo* succeeded" in text_of(progress)
    checklist = next(m for m in thread if m.text == "Post-rollback verification checklist")
    assert "User Authentication" in str(checklist.blocks)
    rca, chart = sandbox.slack.files()  # the template and its timeline chart, one upload
    assert chart.name.endswith("-timeline.png")
    assert rca.name.endswith("-rca.md")
    assert "- **Incident ID**: INC-" in rca.text
    assert "Rollback approved by Bob" in rca.text  # a real name in a file (users.info)
    assert rca.thread_ts == card(sandbox).ts


def test_non_approver_is_refused_and_nothing_changes(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(MALLORY).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: ephemeral_to(sandbox, MALLORY), what="the refusal")
    assert "not an approver for prod" in ephemeral_to(sandbox, MALLORY)[0]
    assert run_state(sandbox) == "requested"


def test_approver_through_a_user_group_can_approve(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(DAVE).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: run_state(sandbox) == "succeeded", what="the run")


def test_double_approval_runs_the_plan_once(sandbox: Sandbox, script: Path) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    click = sandbox.person(BOB).click_payload(CHANNEL, plan.ts, "approve_run")
    sandbox.platform.interaction(click)
    sandbox.platform.interaction(click)  # a double click, or Slack sending it again
    wait_for(lambda: run_state(sandbox) == "succeeded", what="the run")
    wait_for(lambda: ephemeral_to(sandbox, BOB), what="the second click's answer")
    assert "This click was already received" in ephemeral_to(sandbox, BOB)[0]
    assert "the repeat changed nothing" in ephemeral_to(sandbox, BOB)[0]
    run = sandbox.process.store.runs.find()[0]
    assert [a for a, _ in sandbox.process.runner.workflow.approvals(run)] == [BOB]
    assert script_log(script).count("undo") == 1


def test_reject_updates_the_card_and_frees_the_target(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "reject_run")
    wait_for(lambda: "Rejected" in text_of(card(sandbox)), what="the card to say rejected")
    assert f"by <@{BOB}>" in text_of(card(sandbox))
    assert run_state(sandbox) == "rejected"


def test_requester_can_cancel(sandbox: Sandbox) -> None:
    alice = sandbox.person(ALICE)
    plan = request_rollback(sandbox, alice)
    alice.click(CHANNEL, plan.ts, "cancel_run")
    wait_for(lambda: "Cancelled" in text_of(card(sandbox)), what="the card to say cancelled")


def test_failed_step_says_manual_intervention_and_what_did_not_run(
    sandbox: Sandbox, script: Path
) -> None:
    write_script(script, undo=["permanent"])
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: run_state(sandbox) == "failed", what="the run to fail")
    wait_for(lambda: sandbox.slack.files(), what="the RCA template")
    thread = sandbox.slack.thread(CHANNEL, card(sandbox).ts)
    progress = next(m for m in thread if m.text.startswith("Rollback progress"))
    text = text_of(progress)
    assert "Manual intervention required" in text
    assert ":no_entry_sign: 3. *Status* not run" in text
    assert "Failed: manual intervention required" in text_of(card(sandbox))


def test_long_step_output_is_cut_and_attached_as_a_file(sandbox: Sandbox, script: Path) -> None:
    write_script(script, status=["long"])
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: len(sandbox.slack.files()) >= 2, what="the output file and the template")
    output = next(f for f in sandbox.slack.files() if "step3-status" in f.name)
    assert len(output.text) == 6000
    thread = sandbox.slack.thread(CHANNEL, card(sandbox).ts)
    assert not [m for m in thread if m.text.startswith("Step ")]  # folded: no reply per step
    progress = next(m for m in thread if m.text.startswith("Rollback progress"))
    assert "3. *Status* succeeded" in text_of(progress) and "long output" in text_of(progress)


def test_a_failed_step_gets_its_own_reply_and_others_are_folded(
    sandbox: Sandbox, script: Path
) -> None:
    write_script(script, status=["permanent"])
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: sandbox.slack.files(), what="the RCA template")
    texts = [m.text for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)]
    assert [t for t in texts if t.startswith("Step ")] == ["Step 3 (Status): failed"]


def test_rate_limited_slack_calls_are_retried(sandbox: Sandbox) -> None:
    sandbox.slack.fail_next("chat.postMessage", status=429, retry_after=0, times=1)
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert plan is not None
    statuses = [c.status for c in sandbox.slack.calls_to("chat.postMessage")]
    assert statuses[0] == 429 and 200 in statuses


def test_break_glass_runs_without_a_second_person_and_is_marked_for_review(
    sandbox: Sandbox,
) -> None:
    answers = {
        "severity": "critical",
        "q_functional": "no",
        "q_data_at_risk": "yes",
        "options": ["break_glass"],
        "confirm_text": "EMERGENCY",
    }
    request_rollback(sandbox, sandbox.person(ALICE), answers=answers)
    wait_for(lambda: run_state(sandbox) == "succeeded", what="the run")
    assert "break-glass, mandatory review" in text_of(card(sandbox))


def test_expired_approval_is_marked_in_the_thread(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(approval_ttl_minutes=0.005)
    request_rollback(sandbox, sandbox.person(ALICE))
    wait_for(lambda: run_state(sandbox) == "expired", what="the request to expire")
    wait_for(lambda: "Approval expired" in text_of(card(sandbox)), what="the card")
    wait_for(
        lambda: any(
            "approval request expired" in m.text
            for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)
        ),
        what="the expiry said in the thread",
    )


def test_dedicated_channel_per_incident_invites_requester_and_approvers(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(dedicated_channel=True)
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for block_id, value in {
        "severity": "high",
        "q_functional": "no",
        "q_data_at_risk": "yes",
    }.items():
        alice.choose(view_id, block_id, value)
    alice.submit(view_id)
    channel = wait_for(
        lambda: next((c for c in sandbox.slack.channels() if c.name.startswith("inc-")), None),
        what="the incident channel",
    )
    assert channel.name.endswith("-app")
    invited = wait_for(
        lambda: {i.user for i in sandbox.slack.invites() if i.channel == channel.id},
        what="the invitations",
    )
    assert {ALICE, BOB, CAROL} <= invited
    link = wait_for(
        lambda: [m for m in sandbox.slack.messages(CHANNEL) if channel.id in m.text],
        what="the link in the incident channel",
    )
    assert "is handled in" in link[0].text


def test_app_home_lists_active_rollbacks(sandbox: Sandbox) -> None:
    request_rollback(sandbox, sandbox.person(ALICE))
    settled(sandbox, outbox=True)  # the incident's card (the thread the home links) is posted
    event = {
        "token": "x",
        "team_id": "T0SANDBOX",
        "api_app_id": "A0SANDBOX",
        "type": "event_callback",
        "event_id": "Ev1",
        "event_time": 1,
        "event": {"type": "app_home_opened", "user": BOB, "channel": "D0BOB", "tab": "home"},
    }
    import json

    sandbox.platform.post(json.dumps(event).encode(), "application/json")
    home = wait_for(lambda: sandbox.slack.home(BOB), what="the home tab")
    assert "INC-" in str(home.view["blocks"])
    assert "open thread" in str(home.view["blocks"])


def test_people_tick_the_checklist_and_each_tick_is_recorded(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    checklist = wait_for(
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
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the rollback to finish")
    settled(sandbox, outbox=True)  # the bot's own edits of the checklist are in before Carol's
    carol = sandbox.person(CAROL)
    carol.tick(CHANNEL, checklist.ts, "verify_tick", ["auth", "core"])
    wait_for(
        lambda: "✔ <@UCAROL0001>" in str(sandbox.slack.message(CHANNEL, checklist.ts).blocks),
        what="the ticks to show",
    )
    carol.tick(CHANNEL, checklist.ts, "verify_tick", ["core"])
    incident_id = store.runs.find()[0].incident_id
    ticks = wait_for(
        lambda: (
            [e for e in store.events.of(incident_id) if e.kind == "checklist.tick"][2:]
            and [
                (e.actor, e.detail["item"], e.detail["checked"])
                for e in store.events.of(incident_id)
                if e.kind == "checklist.tick"
            ]
        ),
        what="the untick",
    )
    assert ticks == [
        (CAROL, "auth", True),
        (CAROL, "core", True),
        (CAROL, "auth", False),
    ]


def test_slack_error_is_told_in_the_thread_with_a_reference(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.slack.fail_next("chat.update", error="msg_too_long", status=200, times=1)
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    warning = wait_for(
        lambda: [
            m
            for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)
            if "Could not update Slack" in m.text
        ],
        what="the warning in the thread",
    )
    assert "msg_too_long" in warning[0].text and "reference" in warning[0].text
    wait_for(lambda: run_state(sandbox) == "succeeded", what="the run to go on regardless")
