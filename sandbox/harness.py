"""The whole bot on one machine: fake Slack, a SQLite database, the real Bolt app over HTTP.

`rollback-bot demo` and the end-to-end tests start the same thing: a
`FakeSlack` seeded with the config's incident channels and people, the bot's
schema in a temporary SQLite file, a `BotProcess` serving Slack's request
URL on a free port with a generated signing secret, its runner thread, and a
`Platform` that sends signed requests as people would.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from actions.clock import SYSTEM, Ticker
from actions.http import read_metrics
from bot.app import BotProcess
from bot.application.verification import MetricsReader
from bot.config import RollbackConfig
from bot.execution.planner import Planner
from bot.persistence.store import make_engine, upgrade
from bot.settings import Settings
from sandbox.platform import Person, Platform
from sandbox.slack import FakeSlack


def seeded_slack(
    config: RollbackConfig, people: dict[str, str], groups: dict[str, list[str]] | None = None
) -> FakeSlack:
    """A started fake Slack with `people`, their user `groups` and the config's incident
    channels."""
    slack = FakeSlack().start()
    for user_id, name in people.items():
        slack.add_user(user_id, name=name, real_name=name.capitalize())
    for group_id, members in (groups or {}).items():
        slack.add_usergroup(group_id, handle=group_id.lower(), users=members)
    for index, env in enumerate(config.environments.values()):
        slack.add_channel(
            f"incidents-{index}", channel_id=env.incident_channel, members=list(people)
        )
    return slack


def sandbox_settings(
    slack_url: str,
    slack_token: str,
    workdir: Path,
    *,
    runner_poll_seconds: float = 0.2,
    alert_token: str = "",
) -> Settings:
    """Settings for a bot answering the fake Slack at `slack_url`, with a new signing secret
    and a SQLite file in `workdir` migrated to the schema's head."""
    settings = Settings(
        slack_bot_token=SecretStr(slack_token),
        slack_signing_secret=SecretStr(secrets.token_hex(16)),
        slack_api_url=slack_url,
        database_url=f"sqlite:///{workdir / 'rollback-bot.db'}",
        runner_poll_seconds=runner_poll_seconds,
        runner_lease_seconds=10.0,
        alert_webhook_token=SecretStr(alert_token),
        # Slack here is a local stand-in: its faults are retried at once, not seconds later.
        slack_retry_backoff_seconds=0.01,
        slack_retry_jitter_seconds=0.01,
    )
    upgrade(make_engine(settings.database_url))
    return settings


@dataclass
class Sandbox:
    """A bot wired to stand-ins, started and stopped as one."""

    config: RollbackConfig
    workdir: Path
    people: dict[str, str]
    planner: Planner = field(default_factory=Planner)
    metrics_reader: MetricsReader = read_metrics
    groups: dict[str, list[str]] = field(default_factory=dict)
    runner_poll_seconds: float = 0.2
    recheck_every: float | None = None
    """Seconds between two passes over the due re-checks (None: the bot's own, 5 s)."""
    alert_token: str = ""
    ticker: Ticker = SYSTEM
    slack: FakeSlack = field(init=False)
    process: BotProcess = field(init=False)
    platform: Platform = field(init=False)
    settings: Settings = field(init=False)

    def start(self) -> Sandbox:
        """Start fake Slack, migrate the database, serve the bot, start its runner."""
        self.slack = seeded_slack(self.config, self.people, self.groups)
        self.settings = sandbox_settings(
            self.slack.url,
            self.slack.token,
            self.workdir,
            runner_poll_seconds=self.runner_poll_seconds,
            alert_token=self.alert_token,
        )
        self.process = BotProcess(
            settings=self.settings,
            config=self.config,
            planner=self.planner,
            metrics_reader=self.metrics_reader,
            ticker=self.ticker,
        )
        rechecks = self.process.runner.rechecks
        if self.recheck_every is not None and rechecks is not None:
            rechecks.every = self.recheck_every
        host, port = self.process.start_http("127.0.0.1", 0)
        self.process.start_runner()
        self.platform = Platform(
            bot_url=f"http://{host}:{port}/slack/events",
            signing_secret=self.settings.slack_signing_secret.get_secret_value(),
            slack=self.slack,
        )
        return self

    @property
    def alerts_url(self) -> str:
        """Where Alertmanager would POST."""
        return self.platform.bot_url.replace("/slack/events", "/alerts")

    def person(self, user_id: str) -> Person:
        """One of the seeded people."""
        return self.platform.person(user_id, self.people[user_id])

    def stop(self) -> None:
        """Stop the bot and fake Slack."""
        self.process.stop()
        self.slack.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
