"""The verdict as people see it: the real Bolt app over HTTP, fake Slack, a judged target.

A blocked verdict turns the modal's recommendation to fix forward with the
reason, and the plan message in the thread shows the verdict without an
Approve button.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from handlers.ids import Action
from sandbox.harness import Sandbox
from tests.bot.conftest import ALICE, config_dict
from tests.bot.test_verdict import BLOCKED, JudgedTarget, judge
from tests.fakes.targets import write_script
from tests.fakes.waiting import wait_for
from tests.handlers.conftest import ANSWERS, PEOPLE, request_rollback
from tests.handlers.conftest import card as card_of
from tests.handlers.test_rollback_flow import recommendation_of


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    script = write_script(tmp_path / "script.json")
    judge(script, BLOCKED)
    sandbox = Sandbox(
        config=parse_config(config_dict(), path=Path("test.yml")),
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(factory=lambda params: JudgedTarget(script)),
        runner_poll_seconds=0.1,
    )
    yield sandbox.start()
    sandbox.stop()


def test_a_blocked_verdict_turns_the_modals_recommendation_to_fix_forward(
    sandbox: Sandbox,
) -> None:
    alice = sandbox.person(ALICE)
    assert alice.slash("app prod").status_code == 200
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    text = wait_for(
        lambda: "Fix forward" in (t := recommendation_of(sandbox, view_id)) and t,
        what="the recommendation",
    )
    assert "But the rollback cannot restore service (app blocked: image cannot be pulled" in text
    assert "&lt;registry&gt;" in text and "<registry>" not in text


def test_the_plan_message_shows_the_blocked_verdict_without_approve(sandbox: Sandbox) -> None:
    message = request_rollback(sandbox, sandbox.person(ALICE))
    actions = [
        e["action_id"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]
    ]
    assert Action.APPROVE.value not in actions and Action.CANCEL.value in actions
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    assert "*Reversibility verdict*" in sections
    assert any(
        s.startswith(":red_circle: *app*: blocked: image cannot be pulled") for s in sections
    )


RISKY = [["risky", "migration 002 breaks old code (drops a column); no down script", "m002"]]


def test_a_risky_verdict_is_said_on_the_card_and_in_the_approve_dialog(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    judge(tmp_path / "script.json", RISKY)
    message = request_rollback(sandbox, sandbox.person(ALICE))
    (approve,) = [
        e
        for b in message.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == Action.APPROVE.value
    ]
    dialog = approve["confirm"]["text"]["text"]
    assert dialog.endswith(
        "Verdict: app risky: migration 002 breaks old code (drops a column); no down script."
    )
    card = card_of(sandbox)
    assert (
        "*Before approval:* verdict: app risky: migration 002 breaks old code (drops a column); "
        "no down script" in str(card.blocks)
    )
