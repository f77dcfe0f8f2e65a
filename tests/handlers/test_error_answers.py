"""The app-wide error handler answers every kind of request 200, in the form Slack expects.

Each listener here reads the bot's database before its ack, while the database is away (a
SQLite file whose every statement is refused, or a PostgreSQL scratch cluster stopped by the
test): the error reaches the handler (`handlers.errors.register`) on the real Bolt app, and
the answer must be a 200 (Slack shows a 500 as a bare error and retries events), with the
sentence where Slack shows one, and the person told otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from bot.persistence.store import Store, make_engine, upgrade
from handlers import errors
from sandbox.slack import FakeSlack
from tests.fakes.outage import Outage
from tests.fakes.pgcluster import ArchivedCluster
from tests.fakes.sandboxes_pg import pg_ctl

pytest_plugins = ["tests.fakes.pgcluster"]

USER = "U0PERSON01"
CHANNEL = "C0INCIDENT"
AWAY = "cannot reach its database"

BODIES: dict[str, dict[str, Any]] = {
    "block_actions": {
        "type": "block_actions",
        "user": {"id": USER},
        "team": {"id": "T0"},
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "channel_id": CHANNEL, "message_ts": "1.1"},
        "actions": [{"action_id": "read", "block_id": "b", "type": "button"}],
    },
    "view_submission": {
        "type": "view_submission",
        "user": {"id": USER},
        "team": {"id": "T0"},
        "view": {"id": "V1", "type": "modal", "callback_id": "read", "state": {"values": {}}},
    },
    "event_callback": {
        "type": "event_callback",
        "team_id": "T0",
        "event_id": "Ev1",
        "event": {"type": "app_home_opened", "user": USER, "channel": "D0", "tab": "home"},
    },
    "block_suggestion": {
        "type": "block_suggestion",
        "user": {"id": USER},
        "team": {"id": "T0"},
        "action_id": "read",
        "block_id": "b",
        "value": "ap",
    },
    "shortcut": {
        "type": "shortcut",
        "user": {"id": USER},
        "team": {"id": "T0"},
        "callback_id": "read",
        "trigger_id": "1.2.3",
    },
}
COMMAND = {
    "command": "/rollback",
    "text": "status",
    "user_id": USER,
    "channel_id": CHANNEL,
    "team_id": "T0",
}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_user(USER, name="person")
        fake.add_channel("incidents", channel_id=CHANNEL, members=[USER])
        yield fake


def reading_app(store: Store, client: WebClient) -> App:
    """A Bolt app like the bot's, each of whose listeners reads the database before its ack."""
    app = App(
        token=client.token,
        client=client,
        signing_secret="unused",
        process_before_response=True,
        request_verification_enabled=False,
        token_verification_enabled=False,
    )

    def read(ack: Any) -> None:
        store.runs.find()
        ack()

    app.action("read")(read)
    app.view("read")(read)
    app.event("app_home_opened")(read)
    app.options("read")(read)
    app.shortcut("read")(read)
    app.command("/rollback")(read)
    errors.register(app, client)
    return app


def dispatch(app: App, kind: str) -> tuple[int, str]:
    if kind == "command":
        request = BoltRequest(
            body=urlencode(COMMAND),
            headers={"content-type": ["application/x-www-form-urlencoded"]},
        )
    elif kind == "event_callback":
        request = BoltRequest(
            body=json.dumps(BODIES[kind]), headers={"content-type": ["application/json"]}
        )
    else:
        request = BoltRequest(
            body=urlencode({"payload": json.dumps(BODIES[kind])}),
            headers={"content-type": ["application/x-www-form-urlencoded"]},
        )
    response = app.dispatch(request)
    return response.status, response.body


def told(slack: FakeSlack) -> list[str]:
    said = [c.args.get("text", "") for c in slack.calls if c.ok and c.method.startswith("chat.")]
    return [s for s in said if AWAY in s]


def every_kind_answered(slack: FakeSlack, store: Store, down: Callable[[], None]) -> None:
    app = reading_app(store, WebClient(token=slack.token, base_url=slack.url))
    down()
    answers = {kind: dispatch(app, kind) for kind in [*BODIES, "command"]}
    assert {k: status for k, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    command = json.loads(answers["command"][1])
    assert command["response_type"] == "ephemeral" and AWAY in command["text"]
    assert "Reference" in command["text"]
    submitted = json.loads(answers["view_submission"][1])
    assert submitted["response_action"] == "update"
    assert AWAY in json.dumps(submitted["view"]["blocks"])
    assert json.loads(answers["block_suggestion"][1]) == {"options": []}
    for kind in ("block_actions", "event_callback", "shortcut"):
        assert answers[kind][1] == "", kind  # Slack's expected empty ack
    # the click, the options request and the shortcut told the person; the command and the
    # form said it in their answers; an event is nobody's request: acked, logged
    assert len(told(slack)) == 3


def test_every_kind_of_request_gets_a_200_while_sqlite_is_away(
    slack: FakeSlack, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    outage = Outage(engine)
    try:
        every_kind_answered(slack, Store(engine), outage.down.set)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_every_kind_of_request_gets_a_200_while_postgres_is_stopped(
    slack: FakeSlack, archived_cluster: ArchivedCluster
) -> None:
    engine = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{archived_cluster.port}/postgres"
    )
    upgrade(engine)
    try:
        every_kind_answered(
            slack, Store(engine), lambda: pg_ctl(archived_cluster, "-m", "fast", "stop")
        )
    finally:
        pg_ctl(archived_cluster, "start")
        engine.dispose()
