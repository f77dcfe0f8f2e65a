"""Break-glass through the form as a person does it, and the review message it leaves."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block

from sandbox.harness import Sandbox
from sandbox.platform import Person
from sandbox.slack import Message
from tests.fakes.config import CHANNEL
from tests.fakes.thread import ANSWERS
from tests.fakes.waiting import wait_for

BREAK_GLASS: dict[str, Any] = {
    **ANSWERS,
    "options": ["break_glass"],
    "confirm_text": "EMERGENCY",
}


def break_glass(sandbox: Sandbox, person: Person, text: str = "app prod") -> Message:
    """Roll back with break-glass through the form; return the thread's review message."""
    assert person.slash(text).status_code == 200
    view_id = person.opened_view()
    wait_for(
        lambda: any(
            b.get("block_id") == "options" for b in sandbox.slack.view(view_id).view["blocks"]
        ),
        what="the form",
    )
    for block_id, value in BREAK_GLASS.items():
        person.choose(view_id, block_id, value)
    assert person.submit(view_id).json()["response_action"] == "update"
    target = text.split()[0]
    return wait_for(lambda: review_message(sandbox, target), what="the review message")


def valid(blocks: list[dict[str, Any]]) -> bool:
    """Every block parses into slack_sdk's Block Kit models and passes their validation."""
    parsed = Block.parse_all(blocks)
    assert None not in parsed, blocks  # a type slack_sdk does not know
    for block in parsed:
        block.validate_json()
    return True


def review_message(sandbox: Sandbox, target: str) -> Message | None:
    return next(
        (
            m
            for m in sandbox.slack.messages(CHANNEL)
            if m.text.endswith(f"break-glass rollback of {target}, review needed")
        ),
        None,
    )
