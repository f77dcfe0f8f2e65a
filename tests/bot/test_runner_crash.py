"""SIGKILL a runner process at every step boundary and inside every step; a second one finishes.

The harness is tests/fakes/crash.py (reusable for every target: give it a config and
a planner factory). Here: the scripted target (one variant where the rollback step is
not safe to repeat) and the real config-files target, both behind real maintenance
and health endpoints (the sandbox's scripted HTTP server), on SQLite.
"""

from __future__ import annotations

import io
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions.configfiles import backup_name
from bot.execution.planner import TargetFactory
from bot.persistence.models import Run
from bot.persistence.store import Store
from sandbox.web import Reply, WebStub
from tests.fakes.config import config_dict
from tests.fakes.crash import KINDS, CrashCase, CrashChildren
from tests.fakes.database import postgres_database
from tests.fakes.targets import ScriptedTarget, script_log, write_script

SCRIPTED_STEPS = 7  # maintenance on, 4 scripted, health, maintenance off
CONFIG_STEPS = 6  # maintenance on, back up, restore, restart, health, maintenance off


pytest_plugins = ["tests.fakes.crash"]


def scripted_factory(script: str) -> TargetFactory:
    """For the child process: every target is the scripted one reading `script`."""
    return lambda params: ScriptedTarget(Path(script))


@pytest.fixture
def web() -> Iterator[WebStub]:
    with WebStub() as stub:
        stub.route("POST", "/maintenance", Reply(200, json={"ok": True}))
        stub.route("GET", "/health", Reply(200, body=b"ok"))
        yield stub


def env_config(web: WebStub, **targets: Any) -> dict[str, Any]:
    raw = config_dict(maintenance={"url": f"{web.url}/maintenance"}, health_url=f"{web.url}/health")
    if targets:
        raw["environments"]["prod"]["targets"] = targets
    return raw


def always_steps_ran(store: Store, run: Run) -> None:
    records = {r.position: r.state for r in store.steps.of(run.id)}
    for step in run.plan:
        if step["always"]:
            assert records.get(step["position"]) in ("succeeded", "skipped"), (step, records)


def maintenance_is_off(web: WebStub) -> None:
    bodies = [r.json() for r in web.calls("POST", "/maintenance")]
    assert bodies and bodies[-1] == {"enabled": False}, bodies


def kill_points(steps: int) -> list[tuple[str, int]]:
    return [(kind, position) for position in range(steps) for kind in KINDS]


@pytest.mark.parametrize("kill", kill_points(SCRIPTED_STEPS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_a_killed_run_of_repeatable_steps_is_finished_by_a_second_runner(
    tmp_path: Path,
    web: WebStub,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    script = write_script(tmp_path / "script.json")
    case = CrashCase(
        config=env_config(web),
        factory="tests.bot.test_runner_crash:scripted_factory",
        factory_args={"script": str(script)},
        point="1",
    )
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    assert final.state == "succeeded", final.outcome
    always_steps_ran(store, final)
    maintenance_is_off(web)
    log = script_log(script)
    assert [n for n in dict.fromkeys(log)] == ["stop_workers", "undo", "status", "start_workers"]


@pytest.mark.parametrize("kill", kill_points(SCRIPTED_STEPS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_a_killed_run_never_repeats_a_step_that_is_not_safe_to_repeat(
    tmp_path: Path,
    web: WebStub,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    script = write_script(tmp_path / "script.json", _not_idempotent=["undo"])
    case = CrashCase(
        config=env_config(web),
        factory="tests.bot.test_runner_crash:scripted_factory",
        factory_args={"script": str(script)},
        point="1",
    )
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    log = script_log(script)
    assert log.count("undo") == 1 or (kill == ("started", 2) and log.count("undo") == 0)
    always_steps_ran(store, final)
    maintenance_is_off(web)
    assert log.count("start_workers") >= 1
    undo = next(s for s in store.steps.of(final.id) if s.name == "undo")
    if kill in (("started", 2), ("returned", 2)):
        assert final.state == "failed" and final.needs_manual
        assert undo.state == "interrupted"
        assert final.outcome.count("Manual intervention required") == 1
    else:
        assert final.state == "succeeded", final.outcome
        assert undo.state == "succeeded"


def tar_gz(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.mode = 0o644
            data = text.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("kill", kill_points(CONFIG_STEPS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_a_killed_config_rollback_is_finished_by_a_second_runner(
    tmp_path: Path,
    web: WebStub,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    (live / "app.yaml").write_text("version: 2\n")
    backups = tmp_path / "backups"
    backups.mkdir()
    good = backup_name(datetime(2024, 1, 1, 12, tzinfo=UTC))
    (backups / good).write_bytes(tar_gz({"app.yaml": "version: 1\n"}))
    restarts = tmp_path / "restarts.log"
    restart = [sys.executable, "-c", f"open({str(restarts)!r}, 'a').write('restart\\n')"]
    target = {
        "kind": "config",
        "directory": str(live),
        "backups": str(backups),
        "restart_command": restart,
    }
    case = CrashCase(config=env_config(web, app=target), point=good)
    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=kill,
    )
    assert final.state == "succeeded", final.outcome
    always_steps_ran(store, final)
    maintenance_is_off(web)
    assert (live / "app.yaml").read_text() == "version: 1\n"
    assert restarts.read_text().count("restart") >= 1
    pre_rollback = [p.name for p in backups.iterdir() if p.name != good]
    assert len(pre_rollback) == 1, pre_rollback  # backed up once, even when killed mid-way


@pytest.mark.postgres
@pytest.mark.parametrize("kill", [("started", 2), ("returned", 2), ("saved", 2)], ids=str)
def test_a_killed_run_is_finished_by_a_second_runner_on_postgresql(
    tmp_path: Path,
    web: WebStub,
    kill: tuple[str, int],
    crash_children: CrashChildren,
) -> None:
    script = write_script(tmp_path / "script.json", _not_idempotent=["undo"])
    case = CrashCase(
        config=env_config(web),
        factory="tests.bot.test_runner_crash:scripted_factory",
        factory_args={"script": str(script)},
        point="1",
    )
    with postgres_database() as url:
        store, final = crash_children.crash_and_resume(
            url=url, case=case, case_file=tmp_path / "case.json", kill=kill
        )
        store.engine.dispose()
    assert script_log(script).count("undo") <= 1
    assert script_log(script).count("start_workers") == 1
    maintenance_is_off(web)
    assert final.state == ("succeeded" if kill[0] == "saved" else "failed"), final.outcome
