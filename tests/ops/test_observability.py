"""/metrics scraped by a real Prometheus; JSON logs carry the incident, run, step and target."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.logs import JsonFormatter
from sandbox.harness import Sandbox
from tests.fakes.parts import free_port, require
from tests.fakes.processes import daemon
from tests.fakes.waiting import wait_for

TOKEN = "alert-token-ops"


def _auto_rollback(sandbox: Sandbox) -> str:
    body = {
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "environment": "prod", "target": "app"},
            }
        ]
    }
    answer = httpx.post(
        sandbox.alerts_url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    incident = str(answer.json()["results"][0]["incident"])
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the automatic rollback")
    return incident


def _query(base: str, expression: str) -> list[dict[str, Any]]:
    try:
        reply = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=10)
    except httpx.TransportError:
        return []  # not listening yet
    if reply.status_code != 200:
        return []  # Prometheus answers 503 text while its storage starts
    answer = reply.json()
    return list(answer["data"]["result"]) if answer.get("status") == "success" else []


def test_prometheus_scrapes_the_bot_and_reads_its_series_back(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    binary = require("prometheus", package="prometheus")
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=0.1)
    _auto_rollback(sandbox)
    bot = httpx.URL(sandbox.platform.bot_url)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "rollback-bot",
                        "static_configs": [{"targets": [f"{bot.host}:{bot.port}"]}],
                    }
                ],
            }
        )
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with daemon(argv, log=tmp_path / "prometheus.log"):
        base = f"http://127.0.0.1:{port}"
        runs = wait_for(
            lambda: _query(base, 'rollback_runs_finished_total{outcome="succeeded"}'),
            timeout=60,
            what="Prometheus to scrape the bot",
        )
        assert runs[0]["metric"]["job"] == "rollback-bot"
        assert runs[0]["value"][1] == "1"
        opened = _query(base, "rollback_incidents_opened_total")
        assert [
            (r["metric"]["source"], r["metric"]["severity"], r["value"][1]) for r in opened
        ] == [("monitoring", "critical", "1")]
        steps = _query(base, "rollback_step_duration_seconds_count")
        assert {r["metric"]["action"] for r in steps} >= {"undo", "stop_workers", "start_workers"}
        calls = _query(base, 'rollback_slack_api_calls_total{method="chat.postMessage"}')
        assert calls and float(calls[0]["value"][1]) > 0
        assert _query(base, "rollback_approvals_waiting")[0]["value"][1] == "0"
        assert _query(base, "rollback_approval_to_healthy_seconds_count")[0]["value"][1] == "1"


class JsonLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[JsonLines]:
    handler = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_json_logs_are_one_object_a_line_with_incident_run_step_and_target(
    make_sandbox: Callable[..., Sandbox], json_lines: JsonLines
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=0.1)
    incident = _auto_rollback(sandbox)
    run = sandbox.process.store.runs.find()[0]
    entries = [json.loads(line) for line in json_lines.lines]
    assert all("\n" not in line for line in json_lines.lines)
    during_undo = [e for e in entries if e.get("step") == "undo"]
    assert during_undo, entries
    assert {(e["incident_id"], e["run_id"], e["target"]) for e in during_undo} == {
        (incident, run.id, "app")
    }
    assert any(
        e.get("incident_id") == incident and "monitoring opened" in e["message"] for e in entries
    )
