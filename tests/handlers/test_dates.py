"""Times that target systems write into a verdict reach Slack as date tokens, never as ISO text.

The real Bolt app over HTTP and fake Slack (sandbox/harness.py), a target whose verdict
quotes the time of its backup as the database target does (`2026-12-07T10:04:21+00:00`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from handlers import text as t
from handlers.ids import Action
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, PEOPLE, config_dict
from tests.fakes.targets import write_script
from tests.fakes.thread import card, request_rollback
from tests.fakes.verdicts import JudgedTarget, judge

ISO = "2026-12-07T10:04:21+00:00"
EPOCH = int(datetime(2026, 12, 7, 10, 4, 21, tzinfo=UTC).timestamp())
TOKEN = f"<!date^{EPOCH}^{{date_short_pretty}} {{time_secs}}|2026-12-07 10:04:21 UTC>"
LOSS = [["loss", f"the newest backup was taken {ISO}; writes after it are lost", "backup"]]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    script = write_script(tmp_path / "script.json")
    judge(script, LOSS)
    sandbox = Sandbox(
        config=parse_config(config_dict(), path=Path("test.yml")),
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(factory=lambda params: JudgedTarget(script)),
        runner_poll_seconds=0.1,
    )
    yield sandbox.start()
    sandbox.stop()


def test_a_time_in_the_verdict_is_a_date_token_in_the_plan_and_on_the_card(
    sandbox: Sandbox,
) -> None:
    message = request_rollback(sandbox, sandbox.person(ALICE))
    evidence = [e["text"] for b in message.blocks if b["type"] == "context" for e in b["elements"]]
    assert f"≈ the newest backup was taken {TOKEN}; writes after it are lost" in evidence
    before = [
        e["text"] for b in card(sandbox).blocks if b["type"] == "context" for e in b["elements"]
    ]
    assert before == [
        f"*Before approval:* verdict: app safe with data loss: the newest backup was taken "
        f"{TOKEN}; writes after it are lost"
    ]
    assert ISO not in str(message.blocks) + str(card(sandbox).blocks)


def test_the_approve_dialog_which_renders_no_tokens_says_the_time_in_utc(
    sandbox: Sandbox,
) -> None:
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
        "Verdict: app safe with data loss: the newest backup was taken 2026-12-07 10:04:21 UTC; "
        "writes after it are lost."
    )


def test_times_without_a_zone_and_times_in_code_stay_as_written() -> None:
    said = t.dated(f"naive 2026-12-07T10:04:21, ref `pitr:{ISO}`, aware {ISO}")
    assert said == f"naive 2026-12-07T10:04:21, ref `pitr:{ISO}`, aware {TOKEN}"
