"""A failed rollback is loud and says what to do next; a success is one calm line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.application.timeline import rca_template
from sandbox.harness import Sandbox
from sandbox.web import Reply, WebStub
from tests.fakes.config import ALICE, BOB, CHANNEL, MALLORY
from tests.fakes.targets import script_log, write_script
from tests.fakes.thread import (
    ANSWERS,
    buttons_of,
    card,
    failure_broadcast,
    request_rollback,
    text_of,
    told,
)
from tests.fakes.waiting import wait_for
from tests.handlers.blockkit import assert_valid_block_kit


def _finish(sandbox: Sandbox, state: str) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == state, what=f"the run to be {state}")
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
    assert "read from the live systems: app runs rev 2" in said
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
    store = sandbox.process.store
    wait_for(lambda: len(store.runs.find()) == 2, what="the new request")
    assert store.runs.find()[0].state == "requested"


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


def test_retry_failed_step_reruns_the_stored_plan_from_the_failed_step_on_an_approvers_click(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent", "ok"])
    sandbox = make_sandbox()
    _finish(sandbox, "failed")
    broadcast = failure_broadcast(sandbox)
    assert buttons_of(broadcast) == ["retry_failed_step", "replan_run", "mark_resolved"]
    store = sandbox.process.store

    sandbox.person(ALICE).click(CHANNEL, broadcast.ts, "retry_failed_step")
    wait_for(lambda: told(sandbox, ALICE, "another approver must retry it"), what="the refusal")
    assert store.runs.find()[0].state == "failed"

    sandbox.person(BOB).click(CHANNEL, broadcast.ts, "retry_failed_step")
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the retried run to succeed")
    # the failed step and all after it again; the workers, started again on the failure
    # path, are stopped again first; the rollback change that succeeded is not repeated
    assert script_log(script) == [
        "stop_workers", "undo", "status", "start_workers",
        "stop_workers", "status", "start_workers",
    ]  # fmt: skip
    run = store.runs.find()[0]
    retry = next(e for e in store.events.of(run.incident_id) if e.kind == "run.retry")
    assert retry.actor == BOB and retry.detail["steps"] == [0, 2, 3]
    edited = wait_for(
        lambda: (
            "was retried" in text_of(sandbox.slack.message(CHANNEL, broadcast.ts))
            and sandbox.slack.message(CHANNEL, broadcast.ts)
        ),
        what="the broadcast to say it was retried",
    )
    assert f"from rev 2 to rev 1 was retried* by <@{BOB}>" in text_of(edited)
    assert buttons_of(edited) == []
    incident = store.incidents.get(run.incident_id)
    assert incident is not None
    rca = rca_template(
        incident, store.runs.find(incident_id=incident.id), store.events.of(incident.id)
    )
    assert "Retry of the failed step approved by" in rca
    line = wait_for(
        lambda: next((m for m in sandbox.slack.messages(CHANNEL) if "rolled back" in m.text), None),
        what="the calm success line",
    )
    assert line.thread_ts is None
    assert assert_valid_block_kit(sandbox) > 10


def test_retry_is_refused_when_the_target_changed_since_the_failure(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    sandbox = make_sandbox()
    _finish(sandbox, "failed")
    broadcast = failure_broadcast(sandbox)
    raw = json.loads(script.read_text())
    write_script(script, **{**raw, "_current": "5"})  # a newer deploy since the failure
    sandbox.person(BOB).click(CHANNEL, broadcast.ts, "retry_failed_step")
    wait_for(
        lambda: told(sandbox, BOB, "App now runs rev 5, which this plan neither rolls back"),
        what="the stale refusal",
    )
    assert told(sandbox, BOB, "the stored plan is stale. Re-plan instead.")
    store = sandbox.process.store
    assert store.runs.find()[0].state == "failed"
    assert not [
        e for e in store.events.of(store.runs.find()[0].incident_id) if e.kind == "run.retry"
    ]


def test_failure_that_left_maintenance_on_offers_leave_it_on_and_turn_it_off(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    with WebStub() as web:
        web.route("POST", "/maintenance", Reply(200, json={"ok": True}))
        sandbox = make_sandbox(maintenance={"url": f"{web.url}/maintenance"})
        answers = {**ANSWERS, "options": ["leave_maintenance_on"]}
        plan = request_rollback(sandbox, sandbox.person(ALICE), answers=answers)
        assert "Maintenance mode off · _maintenance_ · up to 30 s\n" in text_of(plan) + "\n"
        sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
        store = sandbox.process.store
        wait_for(lambda: store.runs.find()[0].state == "failed", what="the run to fail")
        broadcast = failure_broadcast(sandbox)
        sent = [r.json()["enabled"] for r in web.calls("POST", "/maintenance")]
        assert sent == [True]  # left on, as asked
        assert "maintenance mode is ON" in text_of(broadcast)
        assert buttons_of(broadcast) == [
            "retry_failed_step", "replan_run", "mark_resolved", "leave_maintenance_on",
            "turn_maintenance_off",
        ]  # fmt: skip

        sandbox.person(MALLORY).click(CHANNEL, broadcast.ts, "turn_maintenance_off")
        wait_for(lambda: told(sandbox, MALLORY, "requester or an approver"), what="refusal")
        sandbox.person(BOB).click(CHANNEL, broadcast.ts, "leave_maintenance_on")
        left = wait_for(
            lambda: (
                "Maintenance stays on" in text_of(sandbox.slack.message(CHANNEL, broadcast.ts))
                and sandbox.slack.message(CHANNEL, broadcast.ts)
            ),
            what="the decision on the broadcast",
        )
        assert f"Maintenance stays on: <@{BOB}> decided." in text_of(left)
        assert buttons_of(left) == [
            "retry_failed_step", "replan_run", "mark_resolved", "turn_maintenance_off"
        ]  # fmt: skip
        assert [r.json()["enabled"] for r in web.calls("POST", "/maintenance")] == [True]

        sandbox.person(ALICE).click(CHANNEL, broadcast.ts, "turn_maintenance_off")
        off = wait_for(
            lambda: (
                "Maintenance turned off" in text_of(sandbox.slack.message(CHANNEL, broadcast.ts))
                and sandbox.slack.message(CHANNEL, broadcast.ts)
            ),
            what="maintenance turned off",
        )
        assert [r.json()["enabled"] for r in web.calls("POST", "/maintenance")] == [True, False]
        assert f"Maintenance turned off by <@{ALICE}>." in text_of(off)
        # What the broadcast says of production now follows: no longer "maintenance is ON",
        # and turning it off is no longer left undone.
        said = text_of(off)
        assert "maintenance mode is ON" not in said
        assert "maintenance mode turned off since the failure" in said
        assert '{"enabled": false}' not in said.split("*Left undone:*")[1]
        assert assert_valid_block_kit(sandbox) > 10
        assert buttons_of(off) == ["retry_failed_step", "replan_run", "mark_resolved"]
        events = [e.kind for e in store.events.of(store.runs.find()[0].incident_id)]
        assert "maintenance.left_on" in events and "maintenance.turned_off" in events

        # Re-plan carries the choice to leave maintenance on into the new form
        alice = sandbox.person(ALICE)
        payload = alice.click_payload(CHANNEL, broadcast.ts, "replan_run")
        alice.last_trigger = payload["trigger_id"]
        assert sandbox.platform.interaction(payload).status_code == 200
        view_id = alice.opened_view()
        view = wait_for(lambda: _filled(sandbox.slack.view(view_id).view), what="the form")
        options = next(b for b in view["blocks"] if b.get("block_id") == "options")
        ticked = [o["value"] for o in options["element"]["initial_options"]]
        assert ticked == ["leave_maintenance_on"]


def test_a_failure_path_that_turned_maintenance_off_offers_no_maintenance_button(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    with WebStub() as web:
        web.route("POST", "/maintenance", Reply(200, json={"ok": True}))
        sandbox = make_sandbox(maintenance={"url": f"{web.url}/maintenance"})
        _finish(sandbox, "failed")
        broadcast = failure_broadcast(sandbox)
        assert [r.json()["enabled"] for r in web.calls("POST", "/maintenance")] == [True, False]
        assert "maintenance mode is off again" in text_of(broadcast)
        assert buttons_of(broadcast) == ["retry_failed_step", "replan_run", "mark_resolved"]
