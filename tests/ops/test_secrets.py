"""Planted secrets reach the systems they are for, and nothing else: Slack, logs, rows, files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy
import yaml

from bot.config import load_config
from bot.execution.planner import Planner
from bot.logs import JsonFormatter
from bot.secrets import MASK, Secrets
from sandbox.harness import Sandbox
from sandbox.web import Reply, WebStub
from tests.fakes.config import ALICE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget, write_script
from tests.fakes.waiting import wait_for

PLANTED = {
    # ${NAME} in URL paths and query strings, {env: …} and {file: …} tokens; and a namespace
    # from ${NAME}, which is configuration, not a secret.
    "PLANT_HEALTH_PATH": "plantedHealthPath-4d1e",
    "PLANT_HEALTH_QUERY": "plantedHealthQuery-77aa",
    "PLANT_MAINT_PATH": "plantedMaintPath-0b3c",
    "PLANT_HOOK_PATH": "plantedHookPath-91fe",
    "PLANT_STATUS_QUERY": "plantedStatusQuery-5a5a",
    "PLANT_METRICS_KEY": "plantedMetricsKey-c0de",
    "PLANT_NAMESPACE": "plantedNamespace-e1e1",
    "PLANT_ENV_TOKEN": "plantedEnvToken-3c3c",
}
FILE_TOKEN = "plantedFileToken-8f8f"
ALERT_TOKEN = "plantedAlertToken-2b2b"


class Lines(logging.Handler):
    """Every log record of the process, formatted as an operator's handler would."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(JsonFormatter().format(record))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def _config(tmp_path: Path, web: WebStub) -> Path:
    token_file = tmp_path / "status-token"
    token_file.write_text(FILE_TOKEN + "\n")
    raw = config_dict(
        auto_rollback=True,
        veto_seconds=0.2,
        health_url=f"{web.url}/health/${{PLANT_HEALTH_PATH}}?token=${{PLANT_HEALTH_QUERY}}",
        maintenance={
            "url": f"{web.url}/maint/${{PLANT_MAINT_PATH}}",
            "token": {"env": "PLANT_ENV_TOKEN"},
        },
        metrics={"error_rate_url": f"{web.url}/metrics?key=${{PLANT_METRICS_KEY}}"},
        communications={
            "internal_webhook": {"url": f"{web.url}/hook/${{PLANT_HOOK_PATH}}"},
            "status_page": {
                "url": f"{web.url}/status?q=${{PLANT_STATUS_QUERY}}",
                "token": {"file": str(token_file)},
            },
        },
    )
    raw["environments"]["prod"]["targets"]["app"]["namespace"] = "${PLANT_NAMESPACE}"
    path = tmp_path / "rollback.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _everything_the_bot_left(sandbox: Sandbox, lines: Lines, answers: list[str]) -> str:
    slack_calls = [json.dumps([c.method, c.args], default=str) for c in sandbox.slack.calls]
    files = [f.content.decode("utf-8", "replace") for f in sandbox.slack.files()]
    engine = sqlalchemy.create_engine(sandbox.settings.database_url)
    rows = []
    with engine.connect() as conn:
        for table in sqlalchemy.inspect(engine).get_table_names():
            rows += [
                repr(tuple(r)) for r in conn.execute(sqlalchemy.text(f"SELECT * FROM {table}"))
            ]
    engine.dispose()
    on_disk = [
        path.read_bytes().decode("latin-1")
        for path in sandbox.workdir.rglob("*")
        if path.is_file() and path.name not in ("status-token", "rollback.yml")
    ]
    return "\n".join([*slack_calls, *files, *rows, *lines.lines, *answers, *on_disk])


def test_planted_secrets_are_in_no_payload_log_line_row_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: Lines
) -> None:
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    with WebStub() as web:
        for method, path in [
            ("GET", f"/health/{PLANTED['PLANT_HEALTH_PATH']}"),
            ("POST", f"/maint/{PLANTED['PLANT_MAINT_PATH']}"),
            ("POST", f"/hook/{PLANTED['PLANT_HOOK_PATH']}"),
            ("POST", "/status"),
            ("GET", "/metrics"),
        ]:
            web.route(method, path, Reply(200, json={"ok": True, "error_rate": 1}))
        config = load_config(_config(tmp_path, web))
        script = write_script(tmp_path / "script.json")
        sandbox = Sandbox(
            config=config,
            workdir=tmp_path,
            people=PEOPLE,
            planner=Planner(factory=lambda params: ScriptedTarget(script)),
            alert_token=ALERT_TOKEN,
            runner_poll_seconds=0.1,
        ).start()
        try:
            answers = [
                httpx.post(
                    sandbox.alerts_url,
                    json={
                        "alerts": [
                            {
                                "status": "firing",
                                "labels": {
                                    "alertname": f"Leak {PLANTED['PLANT_NAMESPACE']}",
                                    "environment": "prod",
                                    "target": "app",
                                },
                            }
                        ]
                    },
                    headers={"Authorization": f"Bearer {ALERT_TOKEN}"},
                    timeout=30,
                ).text
            ]
            store = sandbox.process.store
            run = wait_for(
                lambda: (r := store.runs.find()) and r[0].state in ("succeeded", "failed") and r[0],
                what="the rollback to finish",
            )
            assert run.state == "succeeded", run
            wait_for(lambda: sandbox.slack.files(), what="the RCA upload")
            answers.append(sandbox.person(ALICE).slash("history app prod").text)
            # The systems the secrets are for did get them.
            maint = web.calls("POST", f"/maint/{PLANTED['PLANT_MAINT_PATH']}")
            assert maint and maint[0].headers.get("Authorization") == (
                f"Bearer {PLANTED['PLANT_ENV_TOKEN']}"
            )
            status = web.calls("POST", f"/status?q={PLANTED['PLANT_STATUS_QUERY']}")
            assert status and status[0].headers.get("Authorization") == f"Bearer {FILE_TOKEN}"
            assert web.calls("POST", f"/hook/{PLANTED['PLANT_HOOK_PATH']}")
            logging.getLogger("tests.ops").error(
                "a step said %s", f"{web.url}/hook/{PLANTED['PLANT_HOOK_PATH']}"
            )
            left = _everything_the_bot_left(sandbox, lines, answers)
        finally:
            sandbox.stop()
    secrets = [v for k, v in PLANTED.items() if k != "PLANT_NAMESPACE"]
    for secret in [*secrets, FILE_TOKEN, ALERT_TOKEN]:
        assert secret not in left, f"{secret} leaked"
    # A namespace taken from the environment is configuration: shown, not masked.
    assert f"Leak {PLANTED['PLANT_NAMESPACE']}" in left
    assert MASK in left
    assert "Leak" in left and "Rollback plan" in left


def test_encoded_forms_are_masked_and_short_values_are_not() -> None:
    secrets = Secrets(["s3cr3t/with space", "prod"])
    text = "a s3cr3t%2Fwith%20space b s3cr3t%2Fwith+space c s3cr3t/with space d prod"
    assert secrets.redact(text) == f"a {MASK} b {MASK} c {MASK} d prod"
    assert secrets.redact_data({"k": ["s3cr3t/with space", 1]}) == {"k": [MASK, 1]}
