"""A real Alertmanager fires at the served bot with bearer credentials, then resolves."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from sandbox.harness import Sandbox
from tests.fakes.parts import free_port, require
from tests.fakes.processes import daemon
from tests.fakes.thread import card, plan_message, text_of
from tests.fakes.waiting import wait_for

TOKEN = "alertmanager-bearer-7c1d"


def _alertmanager_config(path: Path, alerts_url: str) -> None:
    config = {
        "route": {
            "receiver": "rollback-bot",
            "group_by": ["alertname", "environment", "target"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "rollback-bot",
                "webhook_configs": [
                    {
                        "url": alerts_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
                    }
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))


def _amtool(amtool: str, url: str, *args: str) -> None:
    done = subprocess.run(
        [amtool, f"--alertmanager.url={url}", "alert", "add", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_alertmanager_opens_an_incident_the_rollback_runs_and_the_resolution_is_recorded(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    alertmanager = require("prometheus-alertmanager", package="prometheus-alertmanager")
    amtool = require("amtool", package="prometheus-alertmanager")
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=0.5)
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    _alertmanager_config(config, sandbox.alerts_url)
    argv = [
        alertmanager,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    url = f"http://127.0.0.1:{port}"
    labels = ["HighErrorRate", "environment=prod", "target=app", "severity=critical"]
    with daemon(argv, log=tmp_path / "alertmanager.log"):

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, what="Alertmanager to start")
        _amtool(amtool, url, *labels, "--annotation=summary=error rate 62% for 5m")
        store = sandbox.process.store
        wait_for(lambda: plan_message(sandbox), timeout=60, what="the incident from Alertmanager")
        assert "HighErrorRate: error rate 62% for 5m" in text_of(card(sandbox))
        (run,) = store.runs.find()
        wait_for(
            lambda: store.runs.get(run.id).state == "succeeded",  # type: ignore[union-attr]
            timeout=60,
            what="the automatic rollback after the veto window",
        )
        ended = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _amtool(amtool, url, *labels, f"--end={ended}")
        resolved = wait_for(
            lambda: [
                e for e in store.events.of(run.incident_id) if e.kind == "monitoring.resolved"
            ],
            timeout=60,
            what="the resolved notification on the incident",
        )
    assert resolved[0].detail["alert"] == "HighErrorRate"
    assert resolved[0].detail["ended_at"].startswith(ended[:16])
    assert len(store.runs.find()) == 1
