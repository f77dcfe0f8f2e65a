"""A bot serving the regression guard's HTTP API on the production server, for its tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bot.app import BotProcess
from bot.config import parse_config
from bot.settings import Settings
from sandbox.slack import FakeSlack
from tests.fakes.config import config_dict


@dataclass(frozen=True)
class GuardedBot:
    """A `BotProcess` answering HTTP at `base` (no runner: the API only reads)."""

    process: BotProcess
    base: str

    def url(self, environment: str, target: str, version: str) -> str:
        return f"{self.base}/v1/targets/{environment}/{target}/versions/{version}"


@contextmanager
def guarded_bot(database_url: str, *, token: str) -> Iterator[GuardedBot]:
    """The bot on `database_url` (migrated) with `GUARD_API_TOKEN=token`, served on a free port
    by the production HTTP server; stopped afterwards."""
    config = parse_config(config_dict(), path=Path("test.yml"))
    with FakeSlack() as slack:
        settings = Settings(
            slack_bot_token=SecretStr(slack.token),
            slack_signing_secret=SecretStr("signing-secret"),
            slack_api_url=slack.url,
            database_url=database_url,
            guard_api_token=SecretStr(token),
        )
        process = BotProcess(settings=settings, config=config)
        host, port = process.start_http("127.0.0.1", 0)
        try:
            yield GuardedBot(process, f"http://{host}:{port}")
        finally:
            process.stop()
