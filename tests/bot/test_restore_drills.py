"""A database's restore drill through the use cases and the runner, on the real PostgreSQL:
allowed in production, it writes nothing to the live database, measures the time to
recover and the throughput, and a corrupt backup fails it with nothing left behind."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions.base import Level
from bot.application.drills import DrillRecorder, Drills, measure
from bot.application.flows import Flows
from bot.config import RollbackConfig, parse_config
from bot.execution.drill_evidence import DrillEvidence
from bot.execution.planner import Planner
from bot.execution.planning import restore_for_run
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner, stored_steps
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store
from handlers.drill_blocks import finding_text, measured_text
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.flows import RecordingThread
from tests.fakes.pg import HOST, PORT, USER, damaged, dump, execute, exists, pg

pytestmark = pytest.mark.postgres
pytest_plugins = ["tests.fakes.pg"]

TABLES = ("users", "agents", "campaigns", "user_usage_tracking", "user_api_keys")


def drill_config(db: str, backups: Path, *, envs: tuple[str, ...] = ("prod",)) -> RollbackConfig:
    target = {
        "kind": "database",
        "connection": {"host": HOST, "port": PORT, "user": USER, "dbname": db},
        "backups": str(backups),
        "restore_timeout": 60,
    }
    env = {
        "incident_channel": "C0PRODUCT1",
        "approvers": {"users": [BOB, CAROL]},
        "approvals_required": 2,
        "targets": {"db": target},
    }
    raw = {"environments": {name: env for name in envs}}
    return parse_config(raw, path=Path("drill.yml"))


def drills_on(store: Store, config: RollbackConfig) -> Drills:
    flows = Flows(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=Planner(),
        thread=RecordingThread(store=store),
    )
    return Drills(flows)


def run_drill(drills: Drills, environment: str = "prod") -> Run:
    opened = drills.open(environment=environment, target="db", requester=ALICE)
    assert drills.flows.approve(opened.run.id, user=BOB).started
    runner = Runner(
        store=drills.store,
        workflow=drills.flows.workflow,
        config=drills.config,
        planner=drills.flows.planner,
        progress=DrillRecorder(NullProgress(), drills.store),
        sleep=lambda _: None,
    )
    assert runner.run_pending() == [opened.run.id]
    run = drills.store.runs.get(opened.run.id)
    assert run is not None
    return run


def fingerprint(db: str) -> tuple[Any, ...]:
    """What a write to the live database would change: its catalogue row, its write
    counters and every row of its tables."""
    with pg() as conn:
        row = conn.execute(
            "SELECT d.oid, d.datname, d.datallowconn, d.datconnlimit, d.datacl::text,"
            " shobj_description(d.oid, 'pg_database'), s.tup_inserted, s.tup_updated,"
            " s.tup_deleted FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid"
            " WHERE d.datname = %s",
            (db,),
        ).fetchone()
    with pg(db) as conn:
        digest = "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
        rows = [conn.execute(f"{digest} FROM {table} t".encode()).fetchone() for table in TABLES]
    return (row, rows)


def test_a_restore_drill_in_production_measures_the_newest_backup_and_never_writes_live(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    dump(voxflow_db, tmp_path, datetime(2026, 12, 6, 3, 0, tzinfo=UTC))
    newest = dump(voxflow_db, tmp_path, datetime(2026, 12, 7, 3, 0, tzinfo=UTC))
    # any write to live would now fail the drill, and the fingerprint would show it
    execute("postgres", f'ALTER DATABASE "{voxflow_db}" SET default_transaction_read_only = on')
    before = fingerprint(voxflow_db)
    drills = drills_on(store, drill_config(voxflow_db, tmp_path))

    run = run_drill(drills)

    assert run.state == "succeeded", run.outcome
    assert [s.name for s in store.steps.of(run.id)] == [
        "database.restore_into_recovery",
        "database.verify",
        "database.drop_scratch",
    ]
    assert run.point == f"backup:{newest}"
    assert not exists(f"{voxflow_db}_drill")
    assert fingerprint(voxflow_db) == before
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert drill.to_version == f"backup {newest.name}" and drill.from_version == ""
    assert drill.recover_seconds is not None  # on the store's clock, frozen in tests
    assert [s["part"] for s in drill.steps] == ["rollback", "rollback", "cleanup"]
    assert drill.steps[0]["bytes"] == newest.stat().st_size
    assert drill.steps[0]["bytes_per_second"] > 0
    said = measured_text("db", measure(stored_steps(run), store.steps.of(run.id)))
    assert said.startswith(":test_tube: *Restore drill measured*: restoring the newest backup")
    assert "/s" in said and "nothing live was touched" in said


def test_a_corrupt_backup_fails_the_drill_clearly_and_leaves_nothing_behind(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    good = dump(voxflow_db, tmp_path, datetime(2025, 6, 1, 3, 0, tzinfo=UTC))
    corrupt = damaged(good, "truncated_60")  # dated 2026-01-01: the newest
    before = fingerprint(voxflow_db)
    drills = drills_on(store, drill_config(voxflow_db, tmp_path))

    run = run_drill(drills)

    assert run.state == "failed"
    records = {r.name: r for r in store.steps.of(run.id)}
    assert records["database.restore_into_recovery"].state == "failed"
    assert "pg_restore" in records["database.restore_into_recovery"].summary
    assert "database.verify" not in records  # never started
    assert records["database.drop_scratch"].state == "succeeded"  # always, after a failure
    assert not exists(f"{voxflow_db}_drill")
    assert fingerprint(voxflow_db) == before
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "failed" and drill.recover_seconds is None
    assert drill.to_version == f"backup {corrupt.name}"
    said = measured_text("db", measure(stored_steps(run), store.steps.of(run.id)))
    assert "the newest backup of db did *not* restore and verify" in said


def test_a_resumed_restore_drill_rebuilds_every_stored_step(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    dump(voxflow_db, tmp_path, datetime(2026, 12, 7, 3, 0, tzinfo=UTC))
    drills = drills_on(store, drill_config(voxflow_db, tmp_path))
    opened = drills.open(environment="prod", target="db", requester=ALICE)
    run = store.runs.get(opened.run.id)
    assert run is not None

    restored = restore_for_run(Planner(), run, drills.config.environment("prod"), stored_steps(run))

    assert [r.problem for r in restored] == [""] * len(run.plan)
    assert [r.action.describe() for r in restored if r.action] == [
        s["description"] for s in run.plan
    ]
    assert [s["always"] for s in run.plan] == [False, False, True]


def test_the_verdict_cites_the_backup_sets_last_restore_drill_from_any_environment(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    dump(voxflow_db, tmp_path, datetime(2026, 12, 7, 3, 0, tzinfo=UTC))
    config = drill_config(voxflow_db, tmp_path, envs=("staging", "prod"))
    drills = drills_on(store, config)
    prod = config.environment("prod")
    planner = Planner(drilled=DrillEvidence(store, config))

    def finding() -> Any:
        (verdict,) = planner.verdicts(prod, "db", None)
        return next(f for f in verdict.evidence if f.basis.startswith("restore drill"))

    never = finding()
    run = run_drill(drills, "staging")  # the same backups, drilled in staging
    passed = finding()

    assert (never.level, never.text) == (
        Level.OK,
        "never drilled: nobody knows whether these backups restore",
    )
    assert run.state == "succeeded"
    drill = store.drills.get(run.id)
    assert drill is not None and drill.finished_at is not None
    at = f"{drill.finished_at:%Y-%m-%d %H:%M}"
    assert passed.level == Level.OK
    assert passed.text == f"last restore drill of this backup set: 0 s, passed, at {at} UTC"
    assert passed.basis == "restore drill passed"
    shown = finding_text(passed)
    assert shown.startswith("last restore drill of this backup set: 0 s, passed, <!date^")
    assert shown.endswith(f"^{{date_short_pretty}} {{time}}|{at} UTC>")


def test_a_failed_last_restore_drill_makes_the_database_verdict_risky(
    voxflow_db: str, tmp_path: Path, store: Store
) -> None:
    damaged(dump(voxflow_db, tmp_path, datetime(2025, 6, 1, 3, 0, tzinfo=UTC)), "truncated_60")
    config = drill_config(voxflow_db, tmp_path)
    run = run_drill(drills_on(store, config))
    planner = Planner(drilled=DrillEvidence(store, config))

    (verdict,) = planner.verdicts(config.environment("prod"), "db", None)

    assert run.state == "failed"
    drilled = next(f for f in verdict.evidence if f.basis == "restore drill failed")
    assert drilled.level == Level.RISKY and verdict.level != Level.OK
    assert drilled.text.startswith(
        f"last restore drill of this backup set ({run.incident_id}) failed"
    )
