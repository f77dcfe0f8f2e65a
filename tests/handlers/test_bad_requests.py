"""Unverified requests get a 4xx and reach nothing; signed but malformed ones get a clear answer.

Every request goes over HTTP to the served Bolt app with the real signing
check, as Slack would send it; what the bot then does is read back from the
fake Slack Web API and from the log.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from sandbox.harness import Sandbox
from sandbox.platform import sign
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.rows import set_run_fields
from tests.fakes.thread import request_rollback, settled
from tests.fakes.waiting import wait_for

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING)
    return caplog


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert not any("unhandled error" in r.getMessage() for r in caplog.records)


def nothing_posted(sandbox: Sandbox) -> None:
    settled(sandbox, outbox=True)  # what the request would have caused has run
    posting = ("chat.postEphemeral", "chat.postMessage", "views.open", "views.update")
    assert [c.method for c in sandbox.slack.calls if c.method in posting] == []


def post_raw(sandbox: Sandbox, body: bytes, headers: dict[str, str]) -> Any:
    import httpx

    return httpx.post(sandbox.platform.bot_url, content=body, headers=headers, timeout=10)


def signed_headers(sandbox: Sandbox, body: bytes, content_type: str = FORM) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(sandbox.platform.signing_secret, stamp, body),
    }


def test_non_numeric_timestamp_gets_401_and_nothing_is_posted(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    response = sandbox.person(ALICE).slash("app prod", timestamp="yesterday")
    assert response.status_code == 401
    assert "not a number" in response.text
    nothing_posted(sandbox)
    no_traceback(log_records)


def test_missing_signature_headers_get_401(sandbox: Sandbox) -> None:
    body = json.dumps({"payload": "x"}).encode()
    response = post_raw(sandbox, body, {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert "missing Slack signature" in response.text
    nothing_posted(sandbox)


def test_unsigned_payload_naming_a_user_and_channel_posts_nothing(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    payload = {"type": "block_actions", "user": {"id": ALICE}, "channel": {"id": CHANNEL}}
    response = sandbox.platform.interaction(payload, secret="guessed")
    assert response.status_code == 401
    assert response.text == "invalid Slack signature"
    nothing_posted(sandbox)
    no_traceback(log_records)


def test_request_url_answers_404_to_anything_but_a_post_to_slack_events(sandbox: Sandbox) -> None:
    import httpx

    base = sandbox.platform.bot_url.rsplit("/slack/events", 1)[0]
    assert httpx.get(sandbox.platform.bot_url, timeout=10).status_code == 404
    body = b"command=%2Frollback&text=help"
    elsewhere = httpx.post(
        f"{base}/slack/other", content=body, headers=signed_headers(sandbox, body)
    )
    assert elsewhere.status_code == 404
    nothing_posted(sandbox)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{not json", "application/json", "body is not valid JSON"),
        (b"[1, 2]", "application/json", "body is not a JSON object"),
        (b"payload=%7Bnot+json", FORM, "payload is not valid JSON"),
        (b"payload=%5B%5D", FORM, "payload is not a JSON object"),
        (b"command&text", FORM, "body is not valid form data"),
        (b"\xff\xfe", FORM, "body is not UTF-8"),
    ],
)
def test_signed_body_that_is_not_form_or_json_gets_400(
    sandbox: Sandbox,
    log_records: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
    reason: str,
) -> None:
    response = post_raw(sandbox, body, signed_headers(sandbox, body, content_type))
    assert response.status_code == 400
    assert response.text == reason
    nothing_posted(sandbox)
    no_traceback(log_records)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"type": "block_actions", "user": 7, "actions": []}, "`user` must be an object"),
        ({"type": "block_actions", "user": {"id": ALICE}, "actions": []}, "non-empty list"),
        ({"type": "block_actions", "user": {"id": ALICE}, "actions": [{"x": 1}]}, "action_id"),
        ({"type": "view_submission", "user": {"id": ALICE}, "view": "v"}, "`view` must be"),
        ({"type": "view_submission", "view": {"id": "V1"}}, "string `callback_id`"),
        ({"type": "event_callback", "event": {"user": ALICE}}, "string `type`"),
        ({"type": 3}, "`type` must be a string"),
        ({"type": "block_actions", "response_urls": ["x"]}, "`response_urls` must be"),
    ],
)
def test_signed_payload_bolt_cannot_route_gets_400(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture, payload: dict[str, Any], reason: str
) -> None:
    response = sandbox.platform.interaction(payload)
    assert response.status_code == 400
    assert response.text.startswith("malformed payload") and reason in response.text
    nothing_posted(sandbox)
    no_traceback(log_records)


def test_slash_command_without_trigger_id_is_answered_and_opens_nothing(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    fields = {"command": "/rollback", "text": "app prod", "user_id": ALICE, "channel_id": CHANNEL}
    response = sandbox.platform.form(fields)
    assert response.status_code == 200
    assert "without trigger_id" in str(response.json())
    assert sandbox.slack.calls_to("views.open") == []
    no_traceback(log_records)


def ephemerals_to(sandbox: Sandbox, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals() if e.user == user]


def click_payload(sandbox: Sandbox, **action: Any) -> dict[str, Any]:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    payload = sandbox.person(BOB).click_payload(CHANNEL, plan.ts, "approve_run")
    payload["actions"][0].update(action)
    return payload


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"value": None}, "carries no rollback"),
        ({"value": 42}, "cannot read (actions.0.value: input should be a valid string)"),
        ({"value": "run-that-never-was"}, "no longer exists"),
    ],
)
def test_malformed_approve_click_gets_an_ephemeral_and_approves_nothing(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture, change: dict[str, Any], said: str
) -> None:
    payload = click_payload(sandbox, **change)
    assert sandbox.platform.interaction(payload).status_code == 200
    told = wait_for(lambda: ephemerals_to(sandbox, BOB), what="the answer to the click")
    assert said in told[0]
    assert sandbox.process.store.runs.find()[0].state == "requested"
    no_traceback(log_records)


def test_click_without_a_channel_is_answered_by_direct_message(sandbox: Sandbox) -> None:
    payload = click_payload(sandbox, value=None)
    del payload["channel"]
    assert sandbox.platform.interaction(payload).status_code == 200

    def told() -> list[Any]:
        try:  # the DM channel exists once the bot wrote to it, after its answer
            return [m for m in sandbox.slack.messages(f"D{BOB[1:]}") if "no rollback" in m.text]
        except KeyError:
            return []

    dm = wait_for(told, what="the direct message")
    assert "older message" in dm[0].text
    assert sandbox.process.store.runs.find()[0].state == "requested"


def test_checklist_tick_on_an_unknown_message_says_so(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    payload = sandbox.person(BOB).click_payload(CHANNEL, plan.ts, "approve_run")
    payload["actions"] = [{"action_id": "verify_tick", "selected_options": [{"value": "auth"}]}]
    payload["container"]["message_ts"] = "1.000"
    sandbox.platform.interaction(payload)
    told = wait_for(lambda: ephemerals_to(sandbox, BOB), what="the answer")
    assert "belongs to no known rollback" in told[0]


def open_modal(sandbox: Sandbox) -> tuple[str, dict[str, Any]]:
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for block_id, value in {
        "severity": "high",
        "q_functional": "no",
        "q_data_at_risk": "no",
    }.items():
        alice.choose(view_id, block_id, value)
    settled(sandbox)  # every answer rendered: none can land after what the test sends next
    return view_id, alice.view(view_id)


def submission(sandbox: Sandbox, view: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": "T0SANDBOX"},
        "user": {"id": ALICE, "team_id": "T0SANDBOX"},
        "api_app_id": "A0SANDBOX",
        "view": view,
    }


OLD_META = {"environment": "prod", "target": "app", "requester": ALICE, "channel_id": CHANNEL}


@pytest.mark.parametrize(
    ("meta", "said"),
    [
        ({**OLD_META, "form_version": 0}, "older version of the bot"),
        ({**OLD_META, "environment": "qa"}, "unknown environment 'qa'"),
        ({**OLD_META, "target": "api"}, "unknown target 'api' in prod"),
        ("not json at all", "older version of the bot"),
    ],
)
def test_submission_of_an_outdated_form_is_told_in_the_modal_and_opens_nothing(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture, meta: Any, said: str
) -> None:
    _, view = open_modal(sandbox)
    view["private_metadata"] = meta if isinstance(meta, str) else json.dumps(meta)
    response = sandbox.platform.interaction(submission(sandbox, view))
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "update"
    assert said in json.dumps(answer["view"]["blocks"])
    assert "type `/rollback` again" in json.dumps(answer["view"]["blocks"])
    assert sandbox.process.store.runs.find() == []
    no_traceback(log_records)


@pytest.mark.parametrize(
    ("state", "said"),
    [
        (
            {"values": {"severity": {"severity_choice": {"selected_option": {"value": "x"}}}}},
            "older",
        ),
        (
            {"values": {"q_functional": {"functional_choice": {"selected_option": 5}}}},
            "cannot read",
        ),
        ({"values": "none"}, "cannot read"),
    ],
)
def test_submission_with_state_the_form_never_offered_is_refused_in_the_modal(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture, state: Any, said: str
) -> None:
    _, view = open_modal(sandbox)
    view["state"] = state
    answer = sandbox.platform.interaction(submission(sandbox, view)).json()
    assert answer["response_action"] == "update"
    assert said in json.dumps(answer["view"]["blocks"])
    assert sandbox.process.store.runs.find() == []
    no_traceback(log_records)


def test_answer_change_in_an_outdated_form_replaces_it_with_the_reason(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    view_id, view = open_modal(sandbox)
    view["private_metadata"] = json.dumps({**OLD_META, "environment": "qa"})
    action = {
        "action_id": "severity_choice",
        "block_id": "severity",
        "selected_option": {"value": "low"},
        "action_ts": str(time.time()),
    }
    payload = {**submission(sandbox, view), "type": "block_actions", "actions": [action]}
    assert sandbox.platform.interaction(payload).status_code == 200
    wait_for(
        lambda: "unknown environment 'qa'" in json.dumps(sandbox.slack.view(view_id).view),
        what="the modal to say it is out of date",
    )
    no_traceback(log_records)


def socket_mode(sandbox: Sandbox, payload: dict[str, Any]) -> Any:
    """Dispatch as Bolt's Socket Mode adapter does (slack_bolt/adapter/socket_mode/internals.py)."""
    from slack_bolt.request import BoltRequest

    return sandbox.process.app.dispatch(BoltRequest(mode="socket_mode", body=payload))


def test_socket_mode_payload_bolt_cannot_route_gets_400(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    payload = {"type": "block_actions", "user": {"id": ALICE}, "actions": []}
    response = socket_mode(sandbox, payload)
    assert response.status == 400
    assert "`actions` must be a non-empty list" in response.body
    nothing_posted(sandbox)
    no_traceback(log_records)


def test_socket_mode_malformed_click_gets_an_ephemeral(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    payload = click_payload(sandbox, value=None)
    assert socket_mode(sandbox, payload).status == 200
    told = wait_for(lambda: ephemerals_to(sandbox, BOB), what="the answer to the click")
    assert "carries no rollback" in told[0]
    no_traceback(log_records)


def test_click_on_a_run_whose_environment_left_the_config_is_refused_clearly(
    sandbox: Sandbox, log_records: pytest.LogCaptureFixture
) -> None:
    payload = click_payload(sandbox)
    store = sandbox.process.store
    set_run_fields(store, store.runs.find()[0].id, environment="retired")
    assert sandbox.platform.interaction(payload).status_code == 200
    told = wait_for(lambda: ephemerals_to(sandbox, BOB), what="the answer to the click")
    assert "Unknown environment 'retired' (known: prod)" in told[0]
    assert store.runs.find()[0].state == "requested"
    no_traceback(log_records)
