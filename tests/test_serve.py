"""`rollback-bot serve --http` as an operator runs it: a real process, signed requests."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.fakes.config import ALICE
from tests.fakes.serving import served
from tests.fakes.waiting import wait_for


def test_serve_http_answers_slack_and_health_after_db_upgrade(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        assert not any("token` will be unused" in line for line in bot.output)
        base = bot.base
        assert httpx.get(f"{base}/healthz").text == "ok"
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz ready")
        answer = bot.platform.person(ALICE, "alice").slash("help")
        assert answer.status_code == 200
        assert "/rollback history" in answer.text
        forged = bot.platform.person(ALICE, "alice").slash("help", secret="wrong")
        assert forged.status_code == 401
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'rollback_slack_api_calls_total{method="auth.test"}' in metrics.text
        assert "rollback_slack_request_seconds_count 2.0" in metrics.text
        bot.process.send_signal(signal.SIGTERM)
        assert bot.process.wait(timeout=30) == 0
