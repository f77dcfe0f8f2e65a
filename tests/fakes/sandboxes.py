"""The real Bolt app over HTTP with fake Slack and a scripted target, as fixtures (loaded for
every folder by tests/conftest.py): the Slack side end to end."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from sandbox.harness import Sandbox
from tests.fakes.config import DAVE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget
from tests.fakes.thread import settled


@pytest.fixture
def make_sandbox(
    tmp_path: Path, script: Path, migrated_sqlite: Path
) -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []
    # The sandbox's database, already migrated: its own `upgrade` then finds nothing to do.
    shutil.copyfile(migrated_sqlite, tmp_path / "rollback-bot.db")

    def make(*, alert_token: str = "", **prod: Any) -> Sandbox:
        config = parse_config(config_dict(**prod), path=Path("test.yml"))
        sandbox = Sandbox(
            config=config,
            workdir=tmp_path,
            people=PEOPLE,
            planner=Planner(factory=lambda params: ScriptedTarget(script)),
            groups={"SDBAS00001": [DAVE]},
            runner_poll_seconds=0.1,
            alert_token=alert_token,
        )
        started.append(sandbox.start())
        return sandbox

    yield make
    with contextlib.ExitStack() as stopping:  # every sandbox stops, even if one fails to
        for sandbox in started:
            stopping.callback(sandbox.stop)
            # first the listeners' work in flight: left running past the stop, it fails against
            # the stopped fake Slack and logs its errors into the next test
            stopping.callback(settled, sandbox)


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()
