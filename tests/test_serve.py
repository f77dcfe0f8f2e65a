"""`rollback-bot serve --http` as an operator runs it: a real process, signed requests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from bot.sandbox.platform import Platform
from bot.sandbox.slack import FakeSlack
from tests.bot.conftest import ALICE, config_dict
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).parents[1]


def test_serve_http_answers_slack_and_health_after_db_upgrade(tmp_path: Path) -> None:
    config = tmp_path / "rollback.yml"
    config.write_text(yaml.safe_dump(config_dict()))
    with FakeSlack() as slack:
        slack.add_user(ALICE, name="alice")
        slack.add_channel("incidents", channel_id="C0INCIDENT", members=[ALICE])
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_SIGNING_SECRET": "operator-secret",
            "SLACK_API_URL": slack.url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "ROLLBACK_CONFIG": str(config),
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
        server = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--http", "127.0.0.1:0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert server.stdout is not None
            seen: list[str] = []
            found: re.Match[str] | None = None
            for line in server.stdout:
                seen.append(line)
                found = re.search(r"serving (http://\S+) ", line)
                if found:
                    break
            assert found, "".join(seen)
            assert not any("token` will be unused" in line for line in seen)
            base = found.group(1)
            assert httpx.get(f"{base}/healthz").text == "ok"
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz ready")
            platform = Platform(
                bot_url=f"{base}/slack/events", signing_secret="operator-secret", slack=slack
            )
            answer = platform.person(ALICE, "alice").slash("help")
            assert answer.status_code == 200
            assert "/rollback history" in answer.text
            forged = platform.person(ALICE, "alice").slash("help", secret="wrong")
            assert forged.status_code == 401
            metrics = httpx.get(f"{base}/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            assert 'rollback_slack_api_calls_total{method="auth.test"}' in metrics.text
            assert "rollback_slack_request_seconds_count 2.0" in metrics.text
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
