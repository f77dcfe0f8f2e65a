"""A person's way through the incident thread in fake Slack: ask for a rollback, read the card,
the plan message, the RCA template and a message's text."""

from __future__ import annotations

from typing import Any

from sandbox.harness import Sandbox
from sandbox.platform import Person
from sandbox.slack import Message, UploadedFile
from tests.fakes.config import ALICE, CHANNEL
from tests.fakes.waiting import wait_for

ANSWERS = {
    "severity": "high",
    "q_functional": "no",
    "q_data_at_risk": "no",
    "q_severe_impact": "yes",
}


def request_rollback(
    sandbox: Sandbox, person: Person, text: str = "app prod", answers: dict[str, Any] | None = None
) -> Message:
    """Type the command, answer the modal, submit; return the plan message in the thread."""
    assert person.slash(text).status_code == 200
    view_id = person.opened_view()
    wait_for(
        lambda: sandbox.slack.view(view_id).callback_id and _has_block(sandbox, view_id),
        what="the modal to fill",
    )
    for block_id, value in (answers or ANSWERS).items():
        assert person.choose(view_id, block_id, value).status_code == 200
    response = person.submit(view_id)
    assert response.status_code == 200, response.text
    assert response.json()["response_action"] == "update"
    return wait_for(lambda: plan_message(sandbox), what="the plan message")


def _has_block(sandbox: Sandbox, view_id: str) -> bool:
    return any(b.get("block_id") == "severity" for b in sandbox.slack.view(view_id).view["blocks"])


def card(sandbox: Sandbox) -> Message:
    return next(m for m in sandbox.slack.messages(CHANNEL) if m.thread_ts is None and m.blocks)


def plan_message(sandbox: Sandbox) -> Message | None:
    return next(
        (m for m in sandbox.slack.messages(CHANNEL) if m.text.startswith("Rollback plan")), None
    )


def rca_file(sandbox: Sandbox) -> UploadedFile:
    """Wait for the RCA template (uploaded with its timeline chart) and return it."""
    return wait_for(
        lambda: next((f for f in sandbox.slack.files() if f.name.endswith("-rca.md")), None),
        what="the RCA template",
    )


def text_of(message: Message) -> str:
    """All text of a message's blocks, as a person reads it."""
    parts = [message.text]
    for block in message.blocks:
        for key in ("text",):
            if isinstance(block.get(key), dict):
                parts.append(block[key]["text"])
        for element in block.get("elements") or []:
            if isinstance(element, dict) and isinstance(element.get("text"), (str, dict)):
                text = element["text"]
                parts.append(text["text"] if isinstance(text, dict) else text)
    return "\n".join(parts)


def settled(sandbox: Sandbox, *, outbox: bool = False) -> None:
    """The barrier before asserting that nothing (more) happened.

    Every listener hands its work to the bot's after-ack pool before its answer leaves
    (handlers/lazy.py, `process_before_response=True`), so once the test holds the answers
    and the pool holds nothing, queued or running, that work has run. With `outbox`, also
    wait for the outbox to be sent (its sender writes Slack calls after the work).
    """
    later = sandbox.process.deps.later
    store = sandbox.process.store
    wait_for(
        lambda: (s := later.snapshot()).queued == 0 and s.running == 0,
        what="the listeners' work to finish",
    )
    if outbox:
        wait_for(lambda: store.outbox.backlog() == 0, what="the outbox to be sent")


def recommendation_of(sandbox: Sandbox, view_id: str) -> str:
    blocks = sandbox.slack.view(view_id).view["blocks"]
    return str(next(b for b in blocks if b.get("block_id") == "recommendation")["text"]["text"])


def failure_broadcast(sandbox: Sandbox) -> Message:
    return wait_for(
        lambda: next(
            (m for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts) if m.reply_broadcast),
            None,
        ),
        what="the failure broadcast",
    )


def buttons_of(message: Message) -> list[str]:
    return [
        e["action_id"] for b in message.blocks if b.get("type") == "actions" for e in b["elements"]
    ]


def told(sandbox: Sandbox, user: str, words: str) -> bool:
    return any(e.user == user and words in e.text for e in sandbox.slack.ephemerals(CHANNEL))


def submit_form(sandbox: Sandbox) -> str:
    """Type the command, answer, submit; return the modal's id."""
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    response = alice.submit(view_id)
    assert response.json()["response_action"] == "update"
    return view_id


def direct_messages(sandbox: Sandbox, user: str) -> list[str]:
    try:
        return [m.text for m in sandbox.slack.messages("D" + user[1:])]
    except KeyError:  # no DM channel yet
        return []


def withdrawn(sandbox: Sandbox) -> None:
    store = sandbox.process.store
    (run,) = store.runs.find()
    assert run.state == "cancelled"
    reasons = [e.detail.get("reason", "") for e in store.events.of(run.incident_id)]
    assert any("incident thread could not be opened" in r for r in reasons)
    assert store.runs.lock_holder(environment="prod", targets=["app", "db", "full"]) is None
