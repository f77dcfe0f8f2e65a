"""No relative time is frozen into what stays: the versions a run keeps say when, not "ago".

A target labels its points for the form (`rev 2 · app:v2 · 42s ago · current`); the run keeps
its from → to versions for the card, history and the RCA, read hours or days later. Driven
through the real Bolt app and fake Slack (sandbox/harness.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions.base import RollbackPoint
from bot.config import parse_config
from bot.domain.plans import lasting
from bot.execution.planner import Planner
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget
from tests.fakes.thread import card, rca_file, request_rollback, text_of
from tests.fakes.waiting import wait_for

DEPLOYED = datetime(2026, 12, 7, 10, 4, 21, tzinfo=UTC)
EARLIER = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
TOKEN = f"<!date^{int(DEPLOYED.replace(second=0).timestamp())}^{{date_short_pretty}} {{time}}"


class AgedTarget(ScriptedTarget):
    """A scripted target whose points are labelled with ages, as real targets label them."""

    def points(self) -> list[RollbackPoint]:
        return [
            RollbackPoint("2", "rev 2 · app:v2 · 42s ago · current", DEPLOYED, is_current=True),
            RollbackPoint("1", "rev 1 · app:v1 · 2d ago", EARLIER),
        ]


@pytest.fixture
def sandbox(tmp_path: Path, script: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(
        config=parse_config(config_dict(), path=Path("test.yml")),
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(factory=lambda params: AgedTarget(script)),
        groups={"SDBAS00001": [DAVE]},
        runner_poll_seconds=0.1,
    )
    yield sandbox.start()
    sandbox.stop()


def test_a_points_age_becomes_the_time_it_counts_from_and_current_goes() -> None:
    point = RollbackPoint("2", "rev 2 · app:v2 · 42s ago · current", DEPLOYED, is_current=True)
    assert lasting(point) == "rev 2 · app:v2 · 2026-12-07 10:04 UTC"
    assert lasting(RollbackPoint("2", "v2 · 1a2b3c · running since 3m ago")) == "v2 · 1a2b3c"
    assert lasting(RollbackPoint("1", "rev 1 · app:v1 · age unknown")) == "rev 1 · app:v1"
    backup = RollbackPoint("backup:/b/app.dump", "backup app.dump · 3.5 h ago · 1.2 MB", EARLIER)
    assert lasting(backup) == "backup app.dump · 2026-12-05 08:00 UTC · 1.2 MB"
    dump = RollbackPoint("backup:/b/x.dump", "backup x.dump · 12 min ago · 3 kB", EARLIER)
    assert lasting(dump) == "backup x.dump · 2026-12-05 08:00 UTC · 3 kB"


def test_the_card_history_and_rca_keep_times_not_ages(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    store = sandbox.process.store
    (run,) = store.runs.find()
    assert (run.from_version, run.to_version) == (
        "rev 2 · app:v2 · 2026-12-07 10:04 UTC",
        "rev 1 · app:v1 · 2026-12-05 08:00 UTC",
    )
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the run")
    rca = rca_file(sandbox)
    assert (
        "- **Versions**: app from rev 2 · app:v2 · 2026-12-07 10:04 UTC to rev 1 · app:v1 · "
        "2026-12-05 08:00 UTC" in rca.text
    )
    history = sandbox.person(ALICE).slash("history app prod").text
    said = [history, text_of(card(sandbox)), rca.text]
    assert all(" ago" not in text and "current" not in text for text in said), said
    assert TOKEN in text_of(card(sandbox)) and TOKEN in history
