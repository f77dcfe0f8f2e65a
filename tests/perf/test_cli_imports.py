"""The command line and a serving bot load no client they do not use yet (issue 16, point 6).

Behaviour, not timing: each case runs the command line in a fresh interpreter
and lists the modules it imported. `--help` loads nothing heavy at all, not even
pydantic; `check-config FILE` reads every kind of target (examples/voxflow.yml)
without Kubernetes, AWS, PostgreSQL, HTTP, SQL or Slack clients, and without
pydantic-settings (it reads no settings) or the archive checks (tarfile), which
only a configuration target's steps use; `serve` starts on
SQLite with every kind of target configured and imports Bolt and SQLAlchemy
(it serves with them) but not the target systems' clients, matplotlib, alembic, a SQL
dialect other than SQLite's, the archive checks or Bolt's WSGI adapter, until a
request needs them.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bot.persistence.store import MIGRATIONS, head_revision, make_engine, schema_revisions, upgrade
from sandbox.slack import FakeSlack

ROOT = Path(__file__).parents[2]
VOXFLOW = ROOT / "examples" / "voxflow.yml"
HEAVY = ("kubernetes", "boto3", "botocore", "alembic", "psycopg", "slack_bolt", "sqlalchemy")
MODELS = ("pydantic", "pydantic_core", "pydantic_settings", "yaml")
NOT_READING_CONFIG = (
    "pydantic_settings",
    "bot.settings",
    "tarfile",
    "actions.configfiles.archives",
)
CHART = ("matplotlib", "numpy", "PIL")  # the RCA chart's, drawn when an incident closes
TARGET_CLIENTS = ("kubernetes", "boto3", "botocore", "psycopg", "httpx", "urllib3", "alembic")
PACKAGES = ("configfiles", "database", "docker", "http", "kubernetes", "loadbalancer")

PROBE = """
import json, sys
from bot.__main__ import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

SERVE_PROBE = """
import json, os, signal, sys
from bot.__main__ import main


class StopWhenServing:
    # SIGTERM, as an operator stops the bot, once it says it serves.
    def __init__(self, out):
        self.out = out

    def write(self, text):
        if text.startswith("serving http"):
            os.kill(os.getpid(), signal.SIGTERM)
        return self.out.write(text)

    def flush(self):
        self.out.flush()


sys.stdout = StopWhenServing(sys.stdout)
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(probe: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    answer = json.loads(done.stderr.strip().splitlines()[-1])
    return answer["code"], set(answer["modules"]), done.stdout


def _loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in roots)


@pytest.mark.parametrize("argv", [("--help",), (), ("serve", "--help"), ("check-config", "--help")])
def test_help_and_usage_import_no_heavy_client(argv: tuple[str, ...]) -> None:
    _, modules, _ = _run(PROBE, *argv)
    assert "argparse" in modules  # the probe really ran the command line
    loaded = _loaded(modules, (*HEAVY, *MODELS))
    assert not loaded, f"`rollback-bot {' '.join(argv)}` imported {loaded[:10]}"


def test_check_config_reads_every_target_kind_without_their_clients() -> None:
    code, modules, out = _run(PROBE, "check-config", str(VOXFLOW))
    assert code == 0 and f"{VOXFLOW}: OK" in out, out
    for kind in ("kubernetes", "database", "bluegreen", "docker", "config"):
        assert f": {kind} " in out  # each kind was read and summarised
    loaded = _loaded(modules, (*TARGET_CLIENTS, *CHART, "sqlalchemy", "slack_bolt", "slack_sdk"))
    assert not loaded, f"check-config imported {loaded[:10]}"
    needless = sorted(modules & set(NOT_READING_CONFIG))
    assert not needless, f"check-config FILE imported {needless}"


def test_check_config_without_a_file_reads_the_settings_for_it() -> None:
    env = {**os.environ, "ROLLBACK_CONFIG": str(VOXFLOW)}
    code, modules, out = _run(PROBE, "check-config", env=env)
    assert code == 0 and f"{VOXFLOW}: OK" in out, out
    assert "pydantic_settings" in modules  # the settings named the file


def test_bad_settings_are_reported_with_the_usage_status() -> None:
    # The config file is fine; HTTP_THREADS is out of range, so only the settings fail.
    env = {**os.environ, "ROLLBACK_CONFIG": str(VOXFLOW), "HTTP_THREADS": "0"}
    code, _, out = _run(PROBE, "check-config", env=env)
    assert code == 2 and "OK" not in out


def test_serve_starts_without_target_clients_alembic_or_other_sql_dialects(
    tmp_path: Path,
) -> None:
    raw = yaml.safe_load(VOXFLOW.read_text())
    for environment in raw["environments"].values():  # no metrics poller: no HTTP read at start
        environment.pop("metrics", None)
        environment.pop("monitoring", None)
    config = tmp_path / "rollback.yml"
    config.write_text(yaml.safe_dump(raw))
    database = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(make_engine(database))
    with FakeSlack() as slack:
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_API_URL": slack.url,
            "SLACK_SIGNING_SECRET": "operator-secret",
            "DATABASE_URL": database,
        }
        argv = ("serve", "--http", "127.0.0.1:0", "--config", str(config))
        code, modules, out = _run(SERVE_PROBE, *argv, env=env)
    assert code == 0 and "serving http://" in out, out
    assert {"slack_bolt", "sqlalchemy.orm", "waitress"} <= modules  # it really served
    loaded = _loaded(modules, (*TARGET_CLIENTS, *CHART))
    assert not loaded, f"serve imported {loaded[:10]}"
    later = {"tarfile", "actions.configfiles.archives", "slack_bolt.adapter.wsgi"}
    assert not modules & later, "imported before a step or Slack's first request needs it"
    dialects = {m.split(".")[2] for m in modules if m.startswith("sqlalchemy.dialects.")}
    assert dialects <= {"sqlite", "_typing"}, dialects


def test_schema_revisions_without_alembic_agree_with_alembic(tmp_path: Path) -> None:
    assert head_revision() == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    assert schema_revisions(engine) == (None, head_revision())
    upgrade(engine)
    with engine.connect() as connection:
        assert (
            schema_revisions(engine)[0]
            == MigrationContext.configure(connection).get_current_revision()
        )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_an_actions_package_offers_resolves(package: str) -> None:
    module = importlib.import_module(f"actions.{package}")
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"actions.{package} cannot give {missing}"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        module.Nothing  # noqa: B018
