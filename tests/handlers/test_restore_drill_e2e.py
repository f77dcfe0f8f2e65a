"""A database's restore drill in production, end to end through the real Bolt app over HTTP.

alice types `/rollback drill db prod`; production allows it (a restore drill writes
nothing live); bob approves; the bot restores the newest dump into a scratch database on
the real PostgreSQL, runs the verification queries there, drops it, and says in the
thread how long the restore took and at what throughput; `/rollback drills` lists it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import parse_config
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.pg import HOST, PORT, USER, damaged, dump, exists
from tests.fakes.waiting import wait_for

pytestmark = pytest.mark.postgres
pytest_plugins = ["tests.fakes.pg"]

PROD = "C0PRODUCT1"
PEOPLE = {ALICE: "alice", BOB: "bob", CAROL: "carol"}


def started(
    voxflow_db: str, tmp_path: Path, *, corrupt: bool = False, **target: Any
) -> tuple[Sandbox, Path]:
    """A bot whose prod has the database `db`, its dump in tmp_path/backups (`corrupt`:
    truncated), started."""
    backups = tmp_path / "backups"
    backups.mkdir()
    newest = dump(voxflow_db, backups, datetime(2026, 12, 7, 3, 0, tzinfo=UTC))
    if corrupt:
        damaged(newest, "truncated_60").replace(newest)
    env = {
        "incident_channel": PROD,
        "approvers": {"users": [BOB, CAROL]},
        "approvals_required": 2,
        "targets": {
            "db": {
                "kind": "database",
                "connection": {"host": HOST, "port": PORT, "user": USER, "dbname": voxflow_db},
                "backups": str(backups),
                "restore_timeout": 60,
                **target,
            }
        },
    }
    config = parse_config({"environments": {"prod": env}}, path=Path("drill.yml"))
    sandbox = Sandbox(config=config, workdir=tmp_path, people=PEOPLE, runner_poll_seconds=0.1)
    sandbox.start()
    return sandbox, newest


@pytest.fixture
def world(voxflow_db: str, tmp_path: Path) -> Iterator[tuple[Sandbox, str, Path]]:
    sandbox, newest = started(voxflow_db, tmp_path)
    try:
        yield sandbox, voxflow_db, newest
    finally:
        sandbox.stop()


def block_texts(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"]["text"] for b in blocks if isinstance(b.get("text"), dict))


def test_a_restore_drill_runs_in_production_and_reports_its_time_and_throughput(
    world: tuple[Sandbox, str, Path],
) -> None:
    sandbox, db, newest = world
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    answer = alice.slash("drill db prod", channel=PROD)
    assert answer.status_code == 200 and "Planning the drill of db in prod" in answer.text
    plan = wait_for(
        lambda: next(
            (m for m in sandbox.slack.messages(PROD) if m.text.startswith("Rollback drill plan")),
            None,
        ),
        what="the drill's plan message",
    )
    plan_text = block_texts(plan.blocks)
    assert f"Restore {newest.name} into a new database ({db}_drill)" in plan_text
    assert f"Drop the drill's scratch database {db}_drill" in plan_text

    bob.click(PROD, plan.ts, "approve_run")
    store = sandbox.process.store
    run = wait_for(
        lambda: (r := store.runs.find()[0]).state in ("succeeded", "failed") and r, what="the drill"
    )
    assert run.state == "succeeded", run.outcome
    assert not exists(f"{db}_drill")
    said = wait_for(
        lambda: next(
            (
                m.text
                for m in sandbox.slack.thread(PROD, run.slack["thread_ts"])
                if "Restore drill measured" in m.text
            ),
            None,
        ),
        what="the restore drill's report in its thread",
    )
    assert "restoring the newest backup of db took *" in said and "/s" in said

    line = wait_for(
        lambda: next((m.text for m in sandbox.slack.messages(PROD) if "scratch" in m.text), None),
        what="the drill's line in the channel",
    )
    assert line.startswith(
        f":large_green_circle: Drill {run.incident_id}: db's newest backup restored into scratch"
    )
    assert "nothing live was touched" in line

    listing = block_texts(alice.slash("drills", channel=PROD).json()["blocks"])
    assert "db in prod: last drill" in listing and "time to recover" in listing


def test_a_scheduled_restore_drill_of_a_corrupt_backup_runs_by_itself_and_is_flagged(
    voxflow_db: str, tmp_path: Path
) -> None:
    """Nobody types anything: the schedule's slot has passed, the bot starts the drill,
    approves it as the scheduler, runs it, and flags its failure in the thread."""
    schedule = {"drills": {"every": "1d", "at": "00:00", "rto": "15m"}}
    # the only backup is corrupt from the start: the scheduler may start the drill at once
    sandbox, _ = started(voxflow_db, tmp_path, corrupt=True, **schedule)
    try:
        store = sandbox.process.store
        run = wait_for(
            lambda: (
                (runs := store.runs.find()) and runs[0].state in ("succeeded", "failed") and runs[0]
            ),
            what="the scheduled drill",
        )
        assert run.state == "failed" and run.requester == "scheduler"
        said = wait_for(
            lambda: next(
                (
                    m.text
                    for m in sandbox.slack.thread(PROD, run.slack["thread_ts"])
                    if "Scheduled drill flagged" in m.text
                ),
                None,
            ),
            what="the flag in the drill's thread",
        )
        assert "db in prod failed" in said
        assert not exists(f"{voxflow_db}_drill")
        assert len(store.runs.find()) == 1  # one drill for today's slot
        metrics = sandbox.platform.bot_url.replace("/slack/events", "/metrics")
        exported = httpx.get(metrics, timeout=10).text
        assert 'rollback_drill_flagged{environment="prod",reason="failed",target="db"} 1.0' in (
            exported
        )
    finally:
        sandbox.stop()
