"""Slack down when the bot tells a person something, then up: the person is told, once.

Slack is down for the calls that tell (chat.postEphemeral, chat.postMessage answer 500 to
the first tries, the Web API client's own retries included), then comes back: a refusal
said in an incident thread goes through the outbox (durable), and so does a notice with no
run (the form given back, a command's "something went wrong"); only when the database cannot
take it either is it kept and sent again by the process.
"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from handlers.errors import send, tell
from handlers.ids import Action
from handlers.notices import notices_for
from handlers.payloads import Where
from sandbox.harness import Sandbox
from sandbox.slack.models import Call
from tests.fakes.config import ALICE, CHANNEL
from tests.fakes.thread import ANSWERS, direct_messages, request_rollback, settled
from tests.fakes.waiting import wait_for

TRIES = 3
"""One call and the Web API client's two retries of a server error (bot/app.py)."""


def told(sandbox: Sandbox, user: str, words: str) -> list[str]:
    """What `user` was shown (ephemeral, or by DM) that says `words`."""
    ephemeral = [
        c.args.get("text", "")
        for c in sandbox.slack.calls_to("chat.postEphemeral")
        if c.ok and c.args.get("user") == user
    ]
    return [t for t in ephemeral + direct_messages(sandbox, user) if words in t]


def slack_down(sandbox: Sandbox, *, tries: int) -> None:
    """Make the next `tries` calls that could tell a person fail as Slack down does."""
    for method in ("chat.postEphemeral", "chat.postMessage"):
        sandbox.slack.fail_next(method, error="fatal_error", status=500, times=tries)


def test_a_refusal_in_a_thread_reaches_the_person_once_after_a_slack_outage(
    sandbox: Sandbox,
) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    settled(sandbox, outbox=True)
    slack_down(sandbox, tries=2 * TRIES)
    assert sandbox.person(ALICE).click(CHANNEL, plan.ts, Action.APPROVE).status_code == 200
    words = "a second person must approve it"
    wait_for(lambda: told(sandbox, ALICE, words), timeout=60, what="Alice told after the outage")
    settled(sandbox, outbox=True)
    store = sandbox.process.store
    (run,) = store.runs.find()
    notices = [m for m in store.outbox.messages(run.id) if m.kind == "person.notice"]
    assert [(m.state, words in m.detail["text"]) for m in notices] == [("sent", True)]
    assert len(told(sandbox, ALICE, words)) == 1


def test_a_notice_with_no_run_waits_in_the_outbox_and_is_sent_once_slack_is_back(
    sandbox: Sandbox,
) -> None:
    client = sandbox.process.deps.client
    store = sandbox.process.store
    failed: list[Call] = []
    sandbox.slack.on_call(lambda call: None if call.ok else failed.append(call))
    sandbox.slack.fail_next("chat.postMessage", error="fatal_error", status=500, times=2 * TRIES)
    tell(client, Where(user=ALICE), "the form could not be given back")
    assert notices_for(client, send).pending() == 0  # not in this process: in the database
    (queued,) = store.outbox.messages(None)
    assert (queued.kind, queued.run_id, queued.detail["user"]) == ("person.notice", None, ALICE)
    wait_for(
        lambda: store.outbox.messages(None)[0].state == "sent", timeout=60, what="the notice sent"
    )
    assert len(told(sandbox, ALICE, "the form could not be given back")) == 1
    assert len(failed) == 2 * TRIES  # down for the first try and the first retry, then up


def test_a_notice_the_database_cannot_take_either_is_kept_and_sent_once_slack_is_back(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sandbox.process.deps.client
    notices = notices_for(client, send)
    assert notices.flows is not None

    def database_down(run_id: str | None, *, user: str, text: str) -> None:
        raise OperationalError("INSERT INTO outbox", {}, Exception("database is locked"))

    monkeypatch.setattr(notices.flows, "notify_person", database_down)
    sandbox.slack.fail_next("chat.postMessage", error="fatal_error", status=500, times=2 * TRIES)
    tell(client, Where(user=ALICE), "the command could not be answered")
    assert notices.pending() == 1
    wait_for(lambda: notices.pending() == 0, timeout=60, what="the kept notice sent")
    assert len(told(sandbox, ALICE, "the command could not be answered")) == 1
    assert sandbox.process.store.outbox.messages(None) == []


def test_a_form_refused_while_slack_is_down_is_said_to_the_person_once_it_is_back(
    sandbox: Sandbox,
) -> None:
    alice = sandbox.person(ALICE)
    assert alice.slash("app prod to 99").status_code == 200  # no revision 99: refused
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    settled(sandbox)
    # neither the form (views.update) nor a DM can be reached at first, then Slack is back
    sandbox.slack.fail_next("views.update", error="fatal_error", status=500, times=TRIES)
    sandbox.slack.fail_next("chat.postMessage", error="fatal_error", status=500, times=2 * TRIES)
    assert "Creating incident" in str(alice.submit(view_id).json()["view"])
    words = "Nothing was requested"
    wait_for(lambda: told(sandbox, ALICE, words), timeout=60, what="Alice told after the outage")
    client = sandbox.process.deps.client
    wait_for(lambda: notices_for(client, send).pending() == 0, what="nothing kept any more")
    assert len(told(sandbox, ALICE, words)) == 1
    assert "unable to find specified revision 99" in told(sandbox, ALICE, words)[0]
    assert sandbox.process.store.runs.find() == []
