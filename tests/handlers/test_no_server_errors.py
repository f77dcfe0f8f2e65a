"""The bot's database away: every kind of request is answered 200 with a message, never 500.

A click, a form's submission, an event and a slash command each reach the bot while every
statement on its database is refused (SQLite; `tests.fakes.outage`), or while its PostgreSQL
is stopped (a scratch cluster, `tests.fakes.pgcluster`): Slack shows a 500 as a bare error
and retries it, so each must get a 200, in the form Slack expects, and the person a sentence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from handlers.ids import Action
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.outage import Outage
from tests.fakes.pgcluster import ArchivedCluster
from tests.fakes.sandboxes_pg import PostgresSandbox, pg_ctl, stopped
from tests.fakes.thread import ANSWERS, direct_messages, request_rollback
from tests.fakes.waiting import wait_for

pytest_plugins = ["tests.fakes.pgcluster", "tests.fakes.sandboxes_pg"]

DATABASE_AWAY = "cannot reach its database"


def home_opened(sandbox: Sandbox, user: str) -> httpx.Response:
    event = {
        "token": "x",
        "team_id": "T0SANDBOX",
        "api_app_id": "A0SANDBOX",
        "type": "event_callback",
        "event_id": "Ev0OUTAGE",
        "event_time": 1,
        "event": {"type": "app_home_opened", "user": user, "channel": "D0", "tab": "home"},
    }
    return sandbox.platform.post(json.dumps(event).encode(), "application/json")


def told(sandbox: Sandbox, user: str) -> list[str]:
    """What `user` was told in the channel (ephemeral) or by DM."""
    ephemeral = [
        c.args.get("text", "")
        for c in sandbox.slack.calls_to("chat.postEphemeral")
        if c.ok and c.args.get("user") == user
    ]
    return ephemeral + direct_messages(sandbox, user)


def every_request_is_answered(
    sandbox: Sandbox, down: Callable[[], None]
) -> tuple[dict[str, Any], str]:
    """Make a plan and open a form, take the database away, then click, submit, open the
    home tab and type a command; return each answer, and the form's view id."""
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    bob = sandbox.person(BOB)
    assert bob.slash("app prod").status_code == 200
    view_id = bob.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="Bob's form")
    for block_id, value in ANSWERS.items():
        bob.choose(view_id, block_id, value)
    down()
    answers: dict[str, Any] = {}
    click = bob.click(CHANNEL, plan.ts, Action.APPROVE)
    answers["block_actions"] = (click.status_code, click.text)
    submitted = bob.submit(view_id)
    answers["view_submission"] = (submitted.status_code, submitted.json())
    event = home_opened(sandbox, BOB)
    answers["event_callback"] = (event.status_code, event.text)
    command = sandbox.person(ALICE).slash("status")
    answers["command"] = (command.status_code, command.json())
    return answers, view_id


def assert_answered(sandbox: Sandbox, answers: dict[str, Any], view_id: str) -> None:
    """Each answered 200 as Slack expects it; the click, acked before the database was
    needed, told Bob afterwards that it was away; his form's modal says so (not "Creating
    incident…" for ever); the command said so itself."""
    assert {kind: status for kind, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    assert answers["block_actions"][1] == ""  # Slack's expected empty ack
    assert answers["event_callback"][1] == ""
    assert answers["view_submission"][1]["response_action"] == "update"
    command = answers["command"][1]
    assert command.get("response_type", "ephemeral") == "ephemeral"
    assert "database" in command["text"] and "Reference" in command["text"]
    wait_for(
        lambda: any(DATABASE_AWAY in t for t in told(sandbox, BOB)),
        what="Bob told why his click did nothing",
    )

    def form_back() -> dict[str, Any] | None:
        view: dict[str, Any] = sandbox.slack.view(view_id).view
        return view if DATABASE_AWAY in json.dumps(view) else None

    form = wait_for(form_back, what="Bob's modal saying the database is away")
    assert "Creating incident" not in json.dumps(form) and "try again in a minute" in json.dumps(
        form
    )


def test_every_request_gets_a_200_and_a_message_while_sqlite_is_away(sandbox: Sandbox) -> None:
    outage = Outage(sandbox.process.engine)
    try:
        answers, view_id = every_request_is_answered(sandbox, outage.down.set)
        assert_answered(sandbox, answers, view_id)
    finally:
        outage.down.clear()


@pytest.mark.postgres
def test_every_request_gets_a_200_and_a_message_while_postgres_is_stopped(
    archived_cluster: ArchivedCluster, postgres_sandbox: PostgresSandbox
) -> None:
    try:
        answers, view_id = every_request_is_answered(postgres_sandbox, stopped(archived_cluster))
        assert_answered(postgres_sandbox, answers, view_id)
    finally:
        pg_ctl(archived_cluster, "start")
