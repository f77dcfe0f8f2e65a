"""`rollback-bot serve --http` in two processes: the front acks, the work process works.

bot/front.py: every request with work is forwarded once; the work process's
end is the front's end and the front's end is the work process's end; /readyz,
/alerts and /metrics come from the work process.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.fakes.config import ALICE
from tests.fakes.serving import Served, served
from tests.fakes.waiting import wait_for


def _idle(bot: Served) -> str:
    """/metrics, once the work and forward pools have each done one piece of work and hold
    none (else "")."""
    metrics = httpx.get(f"{bot.base}/metrics").text
    lines = set(metrics.splitlines())
    idle = {
        f"rollback_{pool}_{stat} {value}"
        for pool in ("work", "forward")
        for stat, value in (("done", "1.0"), ("running", "0.0"), ("queued", "0.0"))
    }
    return metrics if idle <= lines else ""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too: its parent (the front) has not reaped it yet
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_the_front_acks_and_the_work_process_opens_the_form_exactly_once(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        wait_for(lambda: httpx.get(f"{bot.base}/readyz").status_code == 200, what="ready")
        alice = bot.platform.person(ALICE, "alice")
        answer = alice.slash("help")  # answered in the front's ack
        assert answer.status_code == 200 and "/rollback history" in answer.text
        assert alice.slash("help", secret="wrong").status_code == 401
        assert alice.slash("app prod").status_code == 200
        wait_for(lambda: bot.slack.calls_to("views.open"), what="the form opening")
        # The barrier: the front's pool (forwarding) and the work process's pool are idle,
        # each having finished its one piece of work; a form the front opened would be in.
        metrics = wait_for(lambda: _idle(bot), what="both pools idle")
        assert len(bot.slack.calls_to("views.open")) == 1
        # the work process's own metrics, and the front's ack and forwarding after them
        assert 'rollback_slack_api_calls_total{method="auth.test"} 1.0' in metrics
        # the listener's own `client` is the bot's: counted (and masked) like every call
        assert 'rollback_slack_api_calls_total{method="views.open"} 1.0' in metrics
        assert "rollback_worker_request_seconds_count 1.0" in metrics
        assert "rollback_slack_request_seconds_count 3.0" in metrics
        assert "rollback_forward_done 1.0" in metrics


def test_acks_are_answered_while_the_work_process_waits_on_slack(tmp_path: Path) -> None:
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


def test_alerts_and_readiness_are_answered_by_the_work_process(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        wait_for(lambda: httpx.get(f"{bot.base}/readyz").status_code == 200, what="ready")
        ready = httpx.get(f"{bot.base}/readyz").json()
        assert ready == {"ready": True, "problems": []}
        refused = httpx.post(f"{bot.base}/alerts", json={"alerts": []})
        assert refused.status_code == 401
        taken = httpx.post(
            f"{bot.base}/alerts",
            json={"alerts": []},
            headers={"Authorization": "Bearer alert-token"},
        )
        assert taken.status_code == 200, taken.text
        os.kill(bot.work_process(), signal.SIGKILL)
        wait_for(lambda: bot.process.poll() is not None, what="the front to stop")


def test_the_front_stops_with_an_error_when_the_work_process_dies(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        os.kill(bot.work_process(), signal.SIGKILL)
        assert bot.process.wait(timeout=60) == 1
        assert bot.process.stdout is not None
        said = bot.process.stdout.read()
        assert "the work process exited with status -9" in said


def test_sigterm_stops_the_front_then_the_work_process(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        worker = bot.work_process()
        bot.process.send_signal(signal.SIGTERM)
        assert bot.process.wait(timeout=60) == 0
        wait_for(lambda: _gone(worker), what="the work process to stop")


def test_the_work_process_stops_when_the_front_is_killed(tmp_path: Path) -> None:
    with served(tmp_path) as bot:
        worker = bot.work_process()
        bot.process.kill()
        bot.process.wait(timeout=30)
        wait_for(lambda: _gone(worker), timeout=60, what="the orphaned work process to stop")


@pytest.mark.parametrize("flag", ["--one-process"])
def test_one_process_serves_without_a_work_process(tmp_path: Path, flag: str) -> None:
    with served(tmp_path, flag) as bot:
        alice = bot.platform.person(ALICE, "alice")
        assert alice.slash("app prod").status_code == 200
        wait_for(lambda: bot.slack.calls_to("views.open"), what="the form opening")
        children = Path(f"/proc/{bot.process.pid}/task/{bot.process.pid}/children")
        assert children.read_text().split() == []
        metrics = httpx.get(f"{bot.base}/metrics").text
        assert "rollback_slack_request_seconds_count 1.0" in metrics
        assert "rollback_forward" not in metrics
