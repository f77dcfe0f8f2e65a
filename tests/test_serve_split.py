"""`rollback-bot serve --http` in two processes: the front acks, the work process works.

bot/front.py: every request with work is forwarded once; the work process's
end is the front's end and the front's end is the work process's end; /readyz,
/alerts and /metrics come from the work process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bot.sandbox.platform import Platform
from bot.sandbox.slack import FakeSlack
from tests.bot.conftest import ALICE, config_dict
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).parents[1]
SECRET = "operator-secret"


@dataclass
class Served:
    process: subprocess.Popen[str]
    base: str
    slack: FakeSlack
    output: list[str]

    @property
    def platform(self) -> Platform:
        return Platform(
            bot_url=f"{self.base}/slack/events", signing_secret=SECRET, slack=self.slack
        )

    def work_process(self) -> int:
        """The pid of the front's one child, the work process."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        assert len(pids) == 1, pids
        return pids[0]


@contextmanager
def served(tmp_path: Path, *extra: str) -> Iterator[Served]:
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
        subprocess.run(
            [sys.executable, "-m", "bot", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--http", "127.0.0.1:0", *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
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
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)


def _metrics_once(bot: Served, line: str) -> str:
    """/metrics, once it has `line` (else "")."""
    metrics = httpx.get(f"{bot.base}/metrics").text
    return metrics if line in metrics else ""


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
        time.sleep(1.0)  # had the front also done the work, a second form would open now
        assert len(bot.slack.calls_to("views.open")) == 1
        # the work process's own metrics, and the front's ack and forwarding after them
        metrics = wait_for(lambda: _metrics_once(bot, "rollback_work_done 1.0"), what="work")
        assert 'rollback_slack_api_calls_total{method="auth.test"} 1.0' in metrics
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
