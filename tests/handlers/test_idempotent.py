"""A retried or replayed command, submission or click changes nothing the second time, and says so.

The same signed bytes go to the served app twice (or at once from two
threads), as Slack's retries and a replay within the 5-minute window do.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import httpx

from sandbox.harness import Sandbox
from sandbox.platform import sign
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.thread import ANSWERS, request_rollback, settled
from tests.fakes.waiting import wait_for

FORM = "application/x-www-form-urlencoded"


def send(sandbox: Sandbox, body: bytes, **headers: str) -> httpx.Response:
    """POST these exact bytes, signed now, with extra headers (Slack's retry headers)."""
    stamp = str(int(time.time()))
    signed = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(sandbox.platform.signing_secret, stamp, body),
        **headers,
    }
    return httpx.post(sandbox.platform.bot_url, content=body, headers=signed, timeout=30)


def command_body(sandbox: Sandbox, text: str, user: str = ALICE) -> bytes:
    fields = {
        "command": "/rollback",
        "text": text,
        "user_id": user,
        "user_name": "alice",
        "channel_id": CHANNEL,
        "team_id": "T0SANDBOX",
        "trigger_id": f"{time.time()}.trigger",
        "response_url": f"{sandbox.slack.base}/commands/response",
    }
    return urlencode(fields).encode()


def interaction_body(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def answered_form(sandbox: Sandbox) -> tuple[str, Any]:
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    return view_id, alice


def submission_body(sandbox: Sandbox, form: tuple[str, Any]) -> bytes:
    view_id, person = form
    payload = {
        "type": "view_submission",
        "team": {"id": "T0SANDBOX"},
        "user": {"id": ALICE, "team_id": "T0SANDBOX"},
        "api_app_id": "A0SANDBOX",
        "view": person.view(view_id),  # the person's own answers, as their client sends
    }
    return interaction_body(payload)


def test_retried_command_with_retry_headers_opens_one_modal(sandbox: Sandbox) -> None:
    body = command_body(sandbox, "app prod")
    assert send(sandbox, body).status_code == 200
    retry = send(
        sandbox, body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert retry.status_code == 200
    said = retry.json()["text"]
    assert "This command (Slack's retry 1: http_timeout) was already received" in said
    assert "the repeat changed nothing" in said
    settled(sandbox)  # the retry's work, had it done any, has run
    assert len(sandbox.slack.calls_to("views.open")) == 1


def test_replayed_command_opens_one_modal(sandbox: Sandbox) -> None:
    body = command_body(sandbox, "app prod")
    send(sandbox, body)
    wait_for(lambda: sandbox.slack.calls_to("views.update"), what="the modal to fill")
    said = send(sandbox, body).json()["text"]
    assert "This command was already received (the rollback form was opened)" in said
    assert len(sandbox.slack.calls_to("views.open")) == 1


def test_same_signed_submission_sent_twice_opens_one_incident(sandbox: Sandbox) -> None:
    body = submission_body(sandbox, answered_form(sandbox))
    first = send(sandbox, body).json()
    assert first["response_action"] == "update", first
    assert "Creating incident" in json.dumps(first["view"])
    wait_for(lambda: sandbox.process.store.runs.find(), what="the incident")
    second = send(sandbox, body).json()
    assert second["response_action"] == "update"
    assert "This form was already received" in json.dumps(second["view"])
    settled(sandbox)  # the second submission's work, had it done any, has run
    store = sandbox.process.store
    assert len(store.runs.find()) == 1
    incident_id = store.runs.find()[0].incident_id
    wait_for(
        lambda: f"it opened {incident_id}" in json.dumps(send(sandbox, body).json()["view"]),
        what="a later replay to name the incident the first one opened",
    )
    assert len(store.runs.find()) == 1


def test_concurrent_identical_submissions_open_one_incident(sandbox: Sandbox) -> None:
    body = submission_body(sandbox, answered_form(sandbox))
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: send(sandbox, body).json(), range(4)))
    texts = [json.dumps(a["view"]) for a in answers]
    assert sum("Creating incident" in t for t in texts) == 1
    assert sum("already received" in t for t in texts) == 3
    wait_for(lambda: sandbox.process.store.runs.find(), what="the incident")
    settled(sandbox)  # all four submissions' work has run
    assert len(sandbox.process.store.runs.find()) == 1


def ephemerals_to(sandbox: Sandbox, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals(CHANNEL) if e.user == user]


def test_double_reject_click_rejects_once_and_says_so(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    body = interaction_body(sandbox.person(BOB).click_payload(CHANNEL, plan.ts, "reject_run"))
    send(sandbox, body)
    send(sandbox, body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"})
    told = wait_for(lambda: ephemerals_to(sandbox, BOB), what="the repeat's answer")
    assert "This click was already received" in told[0]
    store = sandbox.process.store
    run = store.runs.find()[0]
    wait_for(lambda: (store.runs.get(run.id) or run).state == "rejected", what="the rejection")
    assert [e.kind for e in store.events.of(run.incident_id)].count("run.rejected") == 1


def test_refused_click_is_not_remembered_so_it_is_answered_again(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    body = interaction_body(sandbox.person(ALICE).click_payload(CHANNEL, plan.ts, "approve_run"))
    send(sandbox, body)
    wait_for(lambda: ephemerals_to(sandbox, ALICE), what="the refusal")
    send(sandbox, body)
    told = wait_for(lambda: ephemerals_to(sandbox, ALICE)[1:], what="the second refusal")
    assert all(
        "a second person must approve" in t for t in [ephemerals_to(sandbox, ALICE)[0], *told]
    )


def test_retried_cancel_command_cancels_once_and_says_what_the_first_did(
    sandbox: Sandbox,
) -> None:
    request_rollback(sandbox, sandbox.person(ALICE))
    incident_id = sandbox.process.store.runs.find()[0].incident_id
    body = command_body(sandbox, f"cancel {incident_id}")
    assert send(sandbox, body).json()["text"].startswith(":hourglass_flowing_sand: Cancelling")
    first = wait_for(lambda: ephemerals_to(sandbox, ALICE), what="the cancel's answer")
    assert "Cancelled the rollback of app in prod" in first[0]
    again = send(sandbox, body, **{"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "timeout"})
    said = again.json()["text"]  # the retry is answered in its ack, from what the first did
    assert "Slack's retry 2: timeout" in said and "Cancelled the rollback" in said
    events = sandbox.process.store.events.of(incident_id)
    assert [e.kind for e in events].count("run.cancelled") == 1
