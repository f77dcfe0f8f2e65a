"""A failed run says what production runs, read live: a version runs only when it serves.

The real Bolt app over HTTP and fake Slack (sandbox/harness.py); a scripted target whose
running point says what of it is not ready, as the Kubernetes, Docker and load-balancer
targets say it (`RollbackPoint.unready`), or whose points cannot be read at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.base import RollbackPoint
from bot.config import parse_config
from bot.execution.planner import Planner
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget, write_script
from tests.fakes.thread import card, request_rollback, text_of
from tests.fakes.waiting import wait_for

UNHEALTHY = "its container is unhealthy by its own healthcheck (exit code 1: no database)"


class UnhealthyTarget(ScriptedTarget):
    """A scripted target whose running version's container fails its healthcheck."""

    def points(self) -> list[RollbackPoint]:
        return [
            RollbackPoint("2", "v2 · 1a2b3c · running", is_current=True, version="app:v2",
                          unready=UNHEALTHY),
            RollbackPoint("1", "v1 · 4d5e6f · ran here until 2h ago"),
        ]  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path, script: Path) -> Iterator[Sandbox]:
    write_script(script, status=["permanent"])
    sandbox = Sandbox(
        config=parse_config(config_dict(), path=Path("test.yml")),
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(factory=lambda params: UnhealthyTarget(script)),
        groups={"SDBAS00001": [DAVE]},
        runner_poll_seconds=0.1,
    )
    yield sandbox.start()
    sandbox.stop()


def test_a_version_whose_container_is_unhealthy_is_set_not_running(sandbox: Sandbox) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    run = wait_for(lambda: (r := store.runs.find()[0]).state == "failed" and r, what="the failure")
    assert run.outcome is not None
    assert f"read from the live systems: app is set to app:v2, but {UNHEALTHY}." in run.outcome
    said = wait_for(
        lambda: "Production now" in (t := text_of(card(sandbox))) and t, what="the card"
    )
    assert "app runs app:v2" not in said and "is set to app:v2, but its container is" in said
