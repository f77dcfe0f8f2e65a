"""The sandbox with its bot's database on a PostgreSQL scratch cluster the test can stop.

`sandbox.harness.Sandbox` keeps the bot's database in a SQLite file; `PostgresSandbox` starts
the same parts (fake Slack, the served bot, its runner, the platform) with the bot's settings
pointing at `database_url` instead, migrated first, as `rollback-bot serve` would find it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import BotProcess
from bot.config import parse_config
from bot.execution.planner import Planner
from bot.persistence.store import make_engine, upgrade
from sandbox.harness import Sandbox, sandbox_settings, seeded_slack
from sandbox.platform import Platform
from tests.fakes.config import DAVE, PEOPLE, config_dict
from tests.fakes.pgcluster import ArchivedCluster, as_postgres
from tests.fakes.targets import ScriptedTarget
from tests.fakes.thread import settled


@dataclass
class PostgresSandbox(Sandbox):
    """A sandbox whose bot keeps its database at `database_url` (set before `start`)."""

    database_url: str = ""

    def start(self) -> PostgresSandbox:
        self.slack = seeded_slack(self.config, self.people, self.groups)
        settings = sandbox_settings(
            self.slack.url, self.slack.token, self.workdir, runner_poll_seconds=0.1
        )
        self.settings = settings.model_copy(update={"database_url": self.database_url})
        engine = make_engine(self.database_url)
        upgrade(engine)
        engine.dispose()
        self.process = BotProcess(
            settings=self.settings,
            config=self.config,
            planner=self.planner,
            metrics_reader=self.metrics_reader,
            ticker=self.ticker,
        )
        host, port = self.process.start_http("127.0.0.1", 0)
        self.process.start_runner()
        self.platform = Platform(
            bot_url=f"http://{host}:{port}/slack/events",
            signing_secret=self.settings.slack_signing_secret.get_secret_value(),
            slack=self.slack,
        )
        return self


def pg_ctl(cluster: ArchivedCluster, *args: str) -> None:
    """Run pg_ctl on the scratch cluster (`stop -m fast`, `start`), waiting for it."""
    as_postgres(
        [str(cluster.bin / "pg_ctl"), "-D", str(cluster.data), "-l", str(cluster.root / "log"),
         "-w", *args]
    )  # fmt: skip


@pytest.fixture
def postgres_sandbox(
    archived_cluster: ArchivedCluster, tmp_path: Path, script: Path
) -> Iterator[PostgresSandbox]:
    """A started sandbox on the scratch cluster's `postgres` database."""
    sandbox = PostgresSandbox(
        config=parse_config(config_dict(), path=Path("test.yml")),
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(factory=lambda params: ScriptedTarget(script)),
        groups={"SDBAS00001": [DAVE]},
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{archived_cluster.port}/postgres",
    )
    sandbox.start()
    with contextlib.ExitStack() as stopping:
        stopping.callback(sandbox.stop)
        stopping.callback(settled, sandbox)
        yield sandbox


def stopped(cluster: ArchivedCluster) -> Callable[[], Any]:
    """A function that stops the cluster (fast shutdown), for a test's outage."""
    return lambda: pg_ctl(cluster, "-m", "fast", "stop")
