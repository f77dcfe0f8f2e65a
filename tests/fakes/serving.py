"""`rollback-bot serve --http` as an operator runs it, for the tests that talk to it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from sandbox.platform import Platform
from sandbox.slack import FakeSlack
from tests.fakes.config import ALICE, config_dict
from tests.fakes.processes import started

ROOT = Path(__file__).parents[2]
SECRET = "operator-secret"


@dataclass
class Served:
    """A running `serve --http`: its process, base URL, fake Slack, and what it printed up
    to serving."""

    process: subprocess.Popen[str]
    base: str
    slack: FakeSlack
    output: list[str]

    @property
    def platform(self) -> Platform:
        return Platform(
            bot_url=f"{self.base}/slack/events", signing_secret=SECRET, slack=self.slack
        )


@contextmanager
def served(tmp_path: Path, *extra: str) -> Iterator[Served]:
    """`rollback-bot serve --http 127.0.0.1:0 *extra` on a migrated SQLite file and the test
    config, answering a fake Slack with Alice in the incident channel; SIGTERM at the end
    if it still runs, then its process group (the work process with it) is killed."""
    config = tmp_path / "rollback.yml"
    config.write_text(yaml.safe_dump(config_dict()))
    with FakeSlack() as slack:
        slack.add_user(ALICE, name="alice")
        slack.add_channel("incidents", channel_id="C0INCIDENT", members=[ALICE])
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": slack.url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "ROLLBACK_CONFIG": str(config),
            "ALERT_WEBHOOK_TOKEN": "alert-token",
        }
        upgraded = subprocess.run(
            [sys.executable, "-m", "bot", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upgraded.returncode == 0, upgraded.stderr
        with started(
            [sys.executable, "-m", "bot", "serve", "--http", "127.0.0.1:0", *extra],
            stop_seconds=60,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout is not None
            seen: list[str] = []
            found = None
            for line in process.stdout:
                seen.append(line)
                found = re.search(r"^serving (http://\S+) ", line)
                if found:
                    break
            assert found, "".join(seen)
            yield Served(process, found.group(1), slack, seen)
