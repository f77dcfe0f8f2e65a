"""/rollback grammar, its answers, and requests that must change nothing."""

from __future__ import annotations

import time

import pytest

from handlers.commands import CommandError, Help, History, Rollback, Status, parse
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.thread import request_rollback, settled
from tests.fakes.waiting import wait_for


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", Help()),
        ("help", Help()),
        ("status", Status()),
        ("status INC-20261124-030000", Status("INC-20261124-030000")),
        ("status INC-20261124-030000-2", Status("INC-20261124-030000-2")),
        ("history app prod", History("app", "prod")),
        ("app prod", Rollback("app", "prod")),
        ("APP Prod", Rollback("app", "prod")),
        ("db prod to 2024-01-01 12:00:00", Rollback("db", "prod", "2024-01-01 12:00:00")),
        ("app prod to 3", Rollback("app", "prod", "3")),
    ],
)
def test_grammar_accepts_the_documented_forms(text: str, parsed: object) -> None:
    assert parse(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app", "needs an environment"),
        ("app prod 3", "expected `to <revision|timestamp|backup>`"),
        ("app prod to", "expected `to <revision|timestamp|backup>`"),
        ("status nope", "is not an incident id"),
        ("status INC-1 INC-2", "at most one incident id"),
        ("history app", "needs a target and an environment"),
        ("help me", "takes no arguments"),
    ],
)
def test_malformed_commands_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse(text)


def test_bad_grammar_gets_the_usage_and_changes_nothing(sandbox: Sandbox) -> None:
    response = sandbox.person(ALICE).slash("app")
    assert response.status_code == 200
    text = str(response.json())
    assert "needs an environment" in text and "/rollback status" in text
    assert sandbox.slack.calls_to("views.open") == []


def test_unknown_target_gets_the_known_ones_and_no_modal(sandbox: Sandbox) -> None:
    response = sandbox.person(ALICE).slash("api prod")
    text = str(response.json())
    assert "unknown target 'api' in prod (known: app, db, full)" in text
    assert "Usage" in text
    assert sandbox.slack.calls_to("views.open") == []


def test_unknown_environment_is_named(sandbox: Sandbox) -> None:
    text = str(sandbox.person(ALICE).slash("app qa").json())
    assert "unknown environment 'qa' (known: prod)" in text


def test_help_lists_usage_and_targets(sandbox: Sandbox) -> None:
    text = str(sandbox.person(ALICE).slash("help").json())
    assert "/rollback history <target> <env>" in text
    assert "`prod`: `app`, `db`, `full`" in text


def test_status_and_history_show_runs_with_who_approved(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert "INC-" in str(sandbox.person(BOB).slash("status").json())
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: sandbox.process.store.runs.find()[0].state == "succeeded", what="the run")
    history = str(sandbox.person(ALICE).slash("history app prod").json())
    assert "succeeded" in history and f"1 of 1 approval (<@{BOB}>)" in history
    incident_id = sandbox.process.store.runs.find()[0].incident_id
    status = str(sandbox.person(ALICE).slash(f"status {incident_id}").json())
    assert "Outcome: rollback completed" in status


def test_status_of_an_unknown_incident_says_so(sandbox: Sandbox) -> None:
    text = str(sandbox.person(ALICE).slash("status INC-20200101-000000").json())
    assert "no incident INC-20200101-000000" in text


def test_forged_signature_gets_401_and_changes_nothing(sandbox: Sandbox) -> None:
    response = sandbox.person(ALICE).slash("app prod", secret="not-the-signing-secret")
    assert response.status_code == 401
    assert sandbox.slack.calls_to("views.open") == []
    assert sandbox.process.store.runs.find() == []


def test_stale_timestamp_gets_401_and_changes_nothing(sandbox: Sandbox) -> None:
    stale = str(int(time.time()) - 10 * 60)
    response = sandbox.person(ALICE).slash("app prod", timestamp=stale)
    assert response.status_code == 401
    assert sandbox.slack.calls_to("views.open") == []


def test_forged_approval_click_changes_nothing(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    bob = sandbox.person(BOB)
    payload = bob._message_payload(
        sandbox.slack.message(CHANNEL, plan.ts),
        [
            {
                "action_id": "approve_run",
                "block_id": "approval_buttons",
                "type": "button",
                "value": sandbox.process.store.runs.find()[0].id,
                "action_ts": "1",
            }
        ],
    )
    response = sandbox.platform.interaction(payload, secret="forged")
    assert response.status_code == 401
    settled(sandbox, outbox=True)
    assert sandbox.process.store.runs.find()[0].state == "requested"


def test_healthz_answers_ok(sandbox: Sandbox) -> None:
    import httpx

    url = sandbox.platform.bot_url.replace("/slack/events", "/healthz")
    assert httpx.get(url).text == "ok"
