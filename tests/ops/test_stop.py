"""SIGTERM and readiness: the served bot stops cleanly in both modes; /readyz tells the truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql

from bot.config import parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine, upgrade
from sandbox.slack import FakeSlack
from tests.fakes.config import ALICE, BOB, config_dict
from tests.fakes.database import PG_ADMIN, postgres_database
from tests.fakes.processes import Lines, started
from tests.fakes.targets import ScriptedTarget, script_log, write_script
from tests.fakes.waiting import wait_for
from tests.ops.socket_mode import APP_TOKEN, SocketModeSlack, WebSocketServer

if TYPE_CHECKING:
    from bot.settings import Settings

ROOT = Path(__file__).parents[2]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_user(ALICE, name="alice")
        fake.add_user(BOB, name="bob")
        fake.add_channel("incidents", channel_id="C0INCIDENT", members=[ALICE, BOB])
        yield fake


def _env(tmp_path: Path, slack: FakeSlack, database_url: str) -> dict[str, str]:
    config = tmp_path / "rollback.yml"
    config.write_text(yaml.safe_dump(config_dict()))
    return {
        **os.environ,
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": "operator-secret",
        "SLACK_APP_TOKEN": "xapp-1-test",
        "SLACK_API_URL": slack.url,
        "DATABASE_URL": database_url,
        "ROLLBACK_CONFIG": str(config),
        "RUNNER_POLL_SECONDS": "0.1",
        "SHUTDOWN_SECONDS": "2",
        "LOG_FORMAT": "json",
    }


def _bot(argv: list[str], *, env: dict[str, str]) -> Any:
    """The bot (or the scripted bot) as a child in its own process group, output piped."""
    return started(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _approve_a_hanging_run(database_url: str, script: Path) -> tuple[Store, str]:
    engine = make_engine(database_url)
    upgrade(engine)
    store = Store(engine)
    config = parse_config(config_dict(), path=Path("test.yml"))
    workflow = Workflow(store=store, config=config)
    planner = Planner(factory=lambda params: ScriptedTarget(script))
    plan = planner.build(env_name="prod", env=config.environment("prod"), target="app", point="1")
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    return store, workflow.approve(run.id, user=BOB).run.id


@pytest.mark.parametrize("mode", ["--http", "--socket"])
def test_sigterm_during_a_long_step_exits_cleanly_and_hands_the_run_back(
    tmp_path: Path, slack: FakeSlack, mode: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'bot.db'}"
    script = write_script(tmp_path / "script.json", undo=["hang"])
    store, run_id = _approve_a_hanging_run(database_url, script)
    args = [mode, "127.0.0.1:0"] if mode == "--http" else [mode]
    with _bot(
        [sys.executable, "-m", "tests.ops.scripted_bot", str(script), *args],
        env=_env(tmp_path, slack, database_url),
    ) as bot:
        assert bot.stdout is not None
        lines = Lines(bot.stdout)
        wait_for(lambda: "undo" in script_log(script), timeout=60, what="the long step to start")
        run = store.runs.get(run_id)
        assert run is not None and run.lease_owner is not None
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=60) == 0, lines.text()
    output = lines.text()
    assert "stopping: finishing requests in flight and the current step" in output
    (handed,) = [json.loads(line) for line in lines.seen if "handed run" in line]
    assert (handed["level"], handed["run_id"], handed["target"]) == ("warning", run_id, "app")
    assert handed["incident_id"].startswith("INC-")
    if mode == "--socket":
        assert output.index("socket connected") < output.index("socket closed")
    run = store.runs.get(run_id)
    assert run is not None and run.lease_owner is None and run.state == "running"
    assert script_log(script) == ["stop_workers", "undo"]


def test_sigterm_disconnects_bolts_socket_mode_handler_and_hands_the_run_back(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'bot.db'}"
    script = write_script(tmp_path / "script.json", undo=["hang"])
    store, run_id = _approve_a_hanging_run(database_url, script)
    with WebSocketServer() as wss, SocketModeSlack(wss.url) as slack:
        slack.add_user(ALICE, name="alice")
        env = {**_env(tmp_path, slack, database_url), "SLACK_APP_TOKEN": APP_TOKEN}
        with _bot(
            [sys.executable, "-m", "tests.ops.scripted_bot", str(script), "--socket-bolt"], env=env
        ) as bot:
            assert bot.stdout is not None
            lines = Lines(bot.stdout)
            wait_for(
                lambda: lines.find("connected to Slack over Socket Mode"),
                timeout=60,
                what="connect",
            )
            assert wss.events == ["open"]
            wait_for(
                lambda: "undo" in script_log(script), timeout=60, what="the long step to start"
            )
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=60) == 0, lines.text()
        # Slack's builtin client closes the socket without a close frame.
        wait_for(
            lambda: wss.events == ["open", "dropped"], timeout=60, what="the websocket to close"
        )
    assert f"handed run {run_id} back" in lines.text()
    run = store.runs.get(run_id)
    assert run is not None and run.lease_owner is None


def test_a_socket_mode_connection_that_never_closes_does_not_keep_the_bot_from_stopping(
    tmp_path: Path, slack: FakeSlack
) -> None:
    database_url = f"sqlite:///{tmp_path / 'bot.db'}"
    script = write_script(tmp_path / "script.json", undo=["hang"])
    store, run_id = _approve_a_hanging_run(database_url, script)
    with _bot(
        [sys.executable, "-m", "tests.ops.scripted_bot", str(script), "--socket-stuck"],
        env=_env(tmp_path, slack, database_url),
    ) as bot:
        assert bot.stdout is not None
        lines = Lines(bot.stdout)
        wait_for(lambda: "undo" in script_log(script), timeout=60, what="the long step to start")
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=60) == 0, lines.text()
    output = lines.text()
    assert "socket closing" in output and "socket closed" not in output
    assert "the Socket Mode connection did not close within 5 s; stopping without it" in output
    assert f"handed run {run_id} back" in output
    run = store.runs.get(run_id)
    assert run is not None and run.lease_owner is None and run.state == "running"


@pytest.mark.parametrize("mode", ["--http", "--socket"])
def test_sigterm_when_idle_exits_at_once_and_claims_nothing_after(
    tmp_path: Path, slack: FakeSlack, mode: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'bot.db'}"
    script = write_script(tmp_path / "script.json")
    upgrade(make_engine(database_url))
    args = [mode, "127.0.0.1:0"] if mode == "--http" else [mode]
    with _bot(
        [sys.executable, "-m", "tests.ops.scripted_bot", str(script), *args],
        env=_env(tmp_path, slack, database_url),
    ) as bot:
        assert bot.stdout is not None
        lines = Lines(bot.stdout)
        wait_for(
            lambda: lines.find("serving|socket connected"), timeout=60, what="the bot to start"
        )
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=60) == 0, lines.text()
    store, run_id = _approve_a_hanging_run(database_url, script)
    assert "handed" not in lines.text()
    assert script_log(script) == []
    assert store.runs.get(run_id) is not None


@pytest.mark.postgres
def test_readyz_fails_when_the_database_is_gone_while_healthz_still_answers(
    tmp_path: Path, slack: FakeSlack
) -> None:
    with postgres_database(prefix="rbtest_ready") as database_url:
        upgrade(make_engine(database_url))
        with _bot(
            [sys.executable, "-m", "bot", "serve", "--http", "127.0.0.1:0"],
            env=_env(tmp_path, slack, database_url),
        ) as bot:
            name = database_url.rsplit("/", 1)[1]
            assert bot.stdout is not None
            lines = Lines(bot.stdout)
            found = wait_for(
                lambda: lines.find(r"serving (http://\S+) "), timeout=60, what="the bot to serve"
            )
            base = found.group(1)
            ready = wait_for(
                lambda: (r := httpx.get(f"{base}/readyz", timeout=30)).status_code == 200 and r,
                timeout=60,
                what="/readyz to say ready",
            )
            assert ready.json() == {"ready": True, "problems": []}
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            gone = httpx.get(f"{base}/readyz", timeout=60)
            assert gone.status_code == 503
            assert any("database does not answer" in p for p in gone.json()["problems"])
            assert httpx.get(f"{base}/healthz", timeout=30).text == "ok"
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=60) == 0, lines.text()


def _on_sqlite(tmp_path: Path, slack: FakeSlack, **more: Any) -> tuple[str, Settings]:
    """A migrated SQLite database in `tmp_path` and settings that use it and `slack`."""
    from pydantic import SecretStr

    from bot.settings import Settings

    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(make_engine(url))
    token = SecretStr(slack.token)
    return url, Settings(database_url=url, slack_bot_token=token, slack_api_url=slack.url, **more)


def test_readyz_fails_on_an_old_schema_and_before_the_runner_starts(
    tmp_path: Path, slack: FakeSlack
) -> None:
    from bot.app import BotProcess

    url, settings = _on_sqlite(tmp_path, slack)
    process = BotProcess(settings=settings, config=parse_config(config_dict(), path=Path("t")))
    assert process.readiness() == ["the runner is not running"]
    with make_engine(url).begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    problems = process.readiness()
    assert len(problems) == 2 and "db upgrade" in problems[0]


def test_a_hanging_readiness_check_does_not_pile_up_probes(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.app
    from bot.app import BotProcess

    _, settings = _on_sqlite(tmp_path, slack)
    process = BotProcess(settings=settings, config=parse_config(config_dict(), path=Path("t")))
    entered, release = threading.Event(), threading.Event()

    def hanging(engine: object) -> None:
        entered.set()
        release.wait(30)

    monkeypatch.setattr(bot.app, "require_current_schema", hanging)
    first = threading.Thread(target=process.readiness)
    first.start()
    assert entered.wait(10)
    assert process.readiness()[-1] == "the previous readiness check is still running"
    release.set()
    first.join(10)
    assert process.readiness() == ["the runner is not running"]


def test_serving_takes_start_ups_objects_out_of_the_collectors_walk(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """bot/__main__.py `freeze_start_up`: a full collection must not walk the config, the
    Bolt app and the listeners made at start; that walk stalled every ack in flight."""
    import gc

    from bot.__main__ import serve_until_signalled
    from bot.app import BotProcess

    _, settings = _on_sqlite(tmp_path, slack)
    process = BotProcess(settings=settings, config=parse_config(config_dict(), path=Path("t")))
    made_at_start = [process, process.app, process.deps.config, process.store]
    assert all(gc.is_tracked(o) for o in made_at_start)
    stop = threading.Event()
    stop.set()  # serve, then stop at once
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    gc.unfreeze()
    try:
        assert serve_until_signalled(process, http=None, socket_mode=False, stop=stop) == 0
        walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not [o for o in made_at_start if id(o) in walked]
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


def test_healthz_fails_while_work_after_an_ack_is_hung_and_recovers_after(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """Liveness is about the part that does the work: a task hung past `work_stuck_seconds`
    fails /healthz (the platform restarts the process); it passes again once the task ends."""
    from bot.app import BotProcess

    _, settings = _on_sqlite(tmp_path, slack, work_stuck_seconds=0.5)
    process = BotProcess(settings=settings, config=parse_config(config_dict(), path=Path("t")))
    answers: list[tuple[str, bytes]] = []

    def healthz() -> tuple[str, bytes]:
        def start(status: str, headers: list[tuple[str, str]]) -> None:
            answers.append((status, b""))

        body = b"".join(process.wsgi({"PATH_INFO": "/healthz"}, start))
        return answers[-1][0], body

    hung, started = threading.Event(), threading.Event()
    try:
        assert healthz() == ("200 OK", b"ok")
        assert process.deps.later.submit(lambda: (started.set(), hung.wait(60)))
        assert started.wait(10)
        status, body = wait_for(
            lambda: (answer := healthz())[0].startswith("503") and answer,
            what="/healthz to fail on the hung task",
        )
        assert status == "503 Service Unavailable"
        assert b"a task after the ack has been running for" in body
        hung.set()
        wait_for(lambda: healthz() == ("200 OK", b"ok"), what="/healthz to pass again")
    finally:
        hung.set()
        process.stop()


def test_healthz_fails_when_the_runner_loop_is_stuck(tmp_path: Path, slack: FakeSlack) -> None:
    """A runner loop whose last full pass is older than `work_stuck_seconds` fails liveness."""
    from bot.app import BotProcess

    _, settings = _on_sqlite(tmp_path, slack, work_stuck_seconds=60.0)
    process = BotProcess(settings=settings, config=parse_config(config_dict(), path=Path("t")))
    try:
        assert process.liveness() == []  # the runner not started yet is not stuck
        process.last_beat = time.monotonic()
        assert process.liveness() == []
        process.last_beat = time.monotonic() - 61.0  # its loop hung in one pass
        (problem,) = process.liveness()
        assert problem.startswith("the runner loop has been stuck for 6")
    finally:
        process.stop()
