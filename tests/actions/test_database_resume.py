"""The resume contract for the database steps: rebuilt from their specs, and interrupted at
each point where they change the system, then resumed with the same memory."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.base import Action, PlanningError, StepContext, TargetPlan, spec_of
from actions.database import DatabaseTarget
from tests.fakes.pg import dump, execute, exists, params, pg, run_step, scalar

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


class Crash(Exception):
    """The bot dying at this point."""


def target(db: str, backups: Path, **overrides: Any) -> DatabaseTarget:
    """Build a target with a fixed clock."""
    return DatabaseTarget(params(db, backups=str(backups), **overrides), now=lambda: NOW)


def steps(plan: TargetPlan) -> list[Action]:
    """Return the plan's steps in order."""
    return [*plan.stage, *plan.prepare, *plan.rollback, *plan.verify, *plan.resume, *plan.keep]


def rebuilt(tgt: DatabaseTarget, action: Action) -> Action:
    """Store the spec as JSON, read it back and rebuild the step as a resumed runner would."""
    spec = json.loads(json.dumps(spec_of(action)))
    return tgt.restore(action.name, spec)


@pytest.fixture
def backup_plan(voxflow_db: str, tmp_path: Path) -> tuple[DatabaseTarget, TargetPlan]:
    """A backup-method plan: the dump has 3 users, the live database 4."""
    path = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('late@example.com')")
    tgt = target(voxflow_db, tmp_path)
    return tgt, tgt.plan(f"backup:{path}")


def finish(tgt: DatabaseTarget, plan: TargetPlan, memory: dict[str, Any], start: int) -> list[Any]:
    """Resume: rebuild every step from its spec and run from `start` with the same memory."""
    return [run_step(rebuilt(tgt, step), memory) for step in steps(plan)[start:]]


def assert_rolled_back(db: str) -> None:
    """The live database holds the dump's rows, the previous one is kept, both open."""
    aside = f"{db}_pre_rollback_20260110_120000"
    assert scalar(db, "SELECT count(*) FROM users") == 3
    assert scalar(aside, "SELECT count(*) FROM users") == 4
    assert not exists(f"{db}_recovery")
    with pg() as conn:
        rows = conn.execute(
            "SELECT bool_and(datallowconn) FROM pg_database WHERE starts_with(datname, %s)", (db,)
        ).fetchone()
    assert rows is not None and rows[0] is True


def test_every_step_is_rebuilt_from_its_spec_as_planned(
    backup_plan: tuple[DatabaseTarget, TargetPlan], voxflow_db: str, tmp_path: Path
) -> None:
    tgt, plan = backup_plan
    execute(voxflow_db, "INSERT INTO schema_migrations VALUES ('002')")
    (tmp_path / "rollback_002.sql").write_text("SELECT 1;")
    migrations = target(voxflow_db, tmp_path, methods=["migration"], migrations=str(tmp_path))
    dump_time = target(voxflow_db, tmp_path, methods=["pitr"])

    for source, planned in (
        (tgt, plan),
        (migrations, migrations.plan("migration:001")),
        (dump_time, dump_time.plan(f"pitr:{NOW.isoformat()}")),
    ):
        for step in steps(planned):
            again = rebuilt(source, step)
            assert (again.name, again.describe()) == (step.name, step.describe())


def test_unknown_steps_and_specs_outside_the_config_are_refused(
    backup_plan: tuple[DatabaseTarget, TargetPlan],
) -> None:
    tgt, _ = backup_plan

    with pytest.raises(PlanningError, match="no step called"):
        tgt.restore("database.drop_everything", {})
    with pytest.raises(PlanningError, match="not a file in the backups directory"):
        tgt.restore(
            "database.restore_into_recovery",
            {"dump": "/etc/passwd", "recovery": f"{tgt.dbname}_recovery", "jobs": 1},
        )
    with pytest.raises(PlanningError, match="is not the recovery database"):
        tgt.restore("database.swap", {"recovery": "postgres", "source": "x"})


def crash_once(monkeypatch: pytest.MonkeyPatch, where: str, *, when: Callable[..., bool]) -> None:
    """Make the function at `where` raise Crash the first time `when(args)` holds."""
    module, _, attr = where.rpartition(".")
    real = getattr(__import__(module, fromlist=[attr]), attr)
    crashed: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not crashed and when(*args, **kwargs):
            crashed.append(True)
            raise Crash(where)
        return real(*args, **kwargs)

    monkeypatch.setattr(where, wrapper)


def always(*args: Any, **kwargs: Any) -> bool:
    """Crash at the first call."""
    return True


CRASHES = [
    # (step index, function that dies, on which call): 0 restore into the recovery database,
    # 1 verify it (both staged before maintenance), 2 swap, 3 verify, 4 the dump of the
    # database set aside (after maintenance)
    (0, "actions.database.selfhosted.create_recovery", always),
    (0, "actions.database.selfhosted.pg_restore", always),
    (0, "actions.database.selfhosted.mark_restored", always),
    (2, "actions.database.selfhosted.apply_properties", always),
    (2, "actions.database.selfhosted.terminate_sessions", always),
    (2, "actions.database.selfhosted.allow_connections", lambda pg, name, allow: allow),
    (4, "actions.database.selfhosted.inspect_archive", always),
]


@pytest.mark.parametrize(("index", "where", "when"), CRASHES, ids=[c[1] for c in CRASHES])
def test_a_crash_at_each_change_is_resumed_to_the_right_end_state(
    backup_plan: tuple[DatabaseTarget, TargetPlan],
    voxflow_db: str,
    monkeypatch: pytest.MonkeyPatch,
    index: int,
    where: str,
    when: Callable[..., bool],
) -> None:
    tgt, plan = backup_plan
    memory: dict[str, Any] = {}
    for step in steps(plan)[:index]:
        run_step(step, memory)
    crash_once(monkeypatch, where, when=when)
    with pytest.raises(Crash):
        steps(plan)[index].run(StepContext.for_test(memory=memory))
    monkeypatch.undo()

    finish(tgt, plan, memory, index)
    again = finish(tgt, plan, memory, 0)

    assert_rolled_back(voxflow_db)
    assert [again[i].skipped for i in (0, 2, 4)] == [True, True, True]
    backups = sorted(p.name for p in Path(tgt.params.backups or "").glob("pre_rollback_*"))
    assert backups == [f"pre_rollback_{voxflow_db}_20260110_120000.dump"]
    assert again[3].summary.startswith("5 verification checks passed")


def test_a_migration_rollback_resumed_after_its_first_step_runs_each_script_once(
    voxflow_db: str, tmp_path: Path
) -> None:
    execute(
        voxflow_db,
        "CREATE TABLE log (v text); INSERT INTO schema_migrations VALUES ('002'), ('003')",
    )
    for version in ("002", "003"):
        (tmp_path / f"rollback_{version}.sql").write_text(f"INSERT INTO log VALUES ('{version}');")
    tgt = target(voxflow_db, tmp_path, methods=["migration"], migrations=str(tmp_path))
    plan = tgt.plan("migration:001")
    memory: dict[str, Any] = {}
    run_step(plan.prepare[0], memory)
    run_step(plan.rollback[0], memory)

    results = finish(tgt, plan, memory, 1)

    assert [r.skipped for r in results[:2]] == [True, False]
    assert scalar(voxflow_db, "SELECT string_agg(v, ',' ORDER BY v) FROM log") == "002,003"
    assert scalar(voxflow_db, "SELECT string_agg(version, ',') FROM schema_migrations") == "001"


def test_a_swap_killed_while_connections_were_refused_is_resumed(
    backup_plan: tuple[DatabaseTarget, TargetPlan], voxflow_db: str
) -> None:
    tgt, plan = backup_plan
    memory: dict[str, Any] = {}
    for step in steps(plan)[:2]:
        run_step(step, memory)
    memory[f"database.swap:{voxflow_db}"] = f"{voxflow_db}_pre_rollback_20260110_120000"
    for name in (voxflow_db, f"{voxflow_db}_recovery"):
        execute("postgres", f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')

    finish(tgt, plan, memory, 2)

    assert_rolled_back(voxflow_db)
