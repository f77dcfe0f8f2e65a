"""`rollback-bot serve --http` as an operator runs it: a real process, signed requests."""

from __future__ import annotations

import signal
import threading
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


def _metrics_once(base: str, line: str) -> str:
    """/metrics, once it has `line` (else "")."""
    metrics = httpx.get(f"{base}/metrics").text
    return metrics if line in metrics else ""


def test_one_process_acks_and_opens_the_form_once_with_no_child_process(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        alice = bot.platform.person(ALICE, "alice")
        assert alice.slash("app prod").status_code == 200
        metrics = wait_for(
            lambda: _metrics_once(bot.base, "rollback_work_done 1.0"), timeout=60, what="work"
        )
        assert len(bot.slack.calls_to("views.open")) == 1
        assert 'rollback_slack_api_calls_total{method="views.open"} 1.0' in metrics
        assert "rollback_slack_request_seconds_count 1.0" in metrics
        children = Path(f"/proc/{bot.process.pid}/task/{bot.process.pid}/children")
        assert children.read_text().split() == []


def test_acks_are_answered_while_the_work_waits_on_slack(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        wait_for(lambda: httpx.get(f"{bot.base}/readyz").status_code == 200, what="ready")
        release = threading.Event()
        bot.slack.on_call(lambda call: call.method != "views.open" or release.wait(30))
        alice = bot.platform.person(ALICE, "alice")
        try:
            for _ in range(3):
                assert alice.slash("app prod").status_code == 200
            wait_for(lambda: bot.slack.calls_to("views.open"), what="a form to be opening")
            help_answer = alice.slash("help")  # while three forms wait on Slack
            assert help_answer.status_code == 200 and "/rollback history" in help_answer.text
            assert not release.is_set()
        finally:
            release.set()
        wait_for(lambda: len(bot.slack.calls_to("views.open")) == 3, what="the three forms")


def test_alerts_and_readiness_are_answered_by_the_served_bot(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        wait_for(lambda: httpx.get(f"{bot.base}/readyz").status_code == 200, what="ready")
        assert httpx.get(f"{bot.base}/readyz").json() == {"ready": True, "problems": []}
        refused = httpx.post(f"{bot.base}/alerts", json={"alerts": []})
        assert refused.status_code == 401
        taken = httpx.post(
            f"{bot.base}/alerts",
            json={"alerts": []},
            headers={"Authorization": "Bearer alert-token"},
        )
        assert taken.status_code == 200, taken.text
