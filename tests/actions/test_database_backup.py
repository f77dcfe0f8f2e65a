"""Backup restoration on the real PostgreSQL: listing, refusal, pre-rollback backup, restore."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.base import PermanentError, PlanningError, StepContext
from actions.database import (
    DatabaseTarget,
    PreRollbackBackup,
    RestoreIntoRecovery,
    inspect_archive,
    list_backups,
)
from actions.params import SecretRef
from tests.fakes.pg import (
    TOC_FLIPS,
    connection,
    damaged,
    dump,
    execute,
    params,
    run_plan,
    run_step,
    scalar,
)

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def clock() -> datetime:
    """Return the fixed test time."""
    return NOW


def target(db: str, backups: Path, **kwargs: Any) -> DatabaseTarget:
    """Build a backup-method target with a fixed clock."""
    rate = kwargs.pop("restore_rate", None)
    return DatabaseTarget(params(db, backups=str(backups), **kwargs), restore_rate=rate, now=clock)


def test_points_list_backups_newest_first_with_age_and_size(
    voxflow_db: str, tmp_path: Path
) -> None:
    old = dump(voxflow_db, tmp_path, NOW - timedelta(days=2))
    new = dump(voxflow_db, tmp_path, NOW - timedelta(hours=3))
    (tmp_path / "unrelated_20260101_000000.dump").write_bytes(b"x")

    points = target(voxflow_db, tmp_path).points()

    assert [p.ref for p in points] == [f"backup:{new.resolve()}", f"backup:{old.resolve()}"]
    assert "3.0 h ago" in points[0].label
    assert "kB" in points[0].label
    assert points[1].created_at == NOW - timedelta(days=2)


def test_garbage_backup_file_is_refused_at_plan_time(voxflow_db: str, tmp_path: Path) -> None:
    garbage = tmp_path / f"{voxflow_db}_20260101_000000.dump"
    garbage.write_bytes(b"this is not a pg_dump archive\n" * 10)
    tgt = target(voxflow_db, tmp_path)

    with pytest.raises(PlanningError, match="cannot be used"):
        tgt.plan(f"backup:{garbage}")
    check = tgt.checks(f"backup:{garbage}")[0]
    assert (check.name, check.ok) == ("backup reads back whole", False)


def test_missing_backup_and_paths_outside_the_directory_are_refused(
    voxflow_db: str, tmp_path: Path
) -> None:
    tgt = target(voxflow_db, tmp_path / "backups")
    (tmp_path / "backups").mkdir()

    with pytest.raises(PlanningError, match="does not exist"):
        tgt.plan(f"backup:{tmp_path}/backups/{voxflow_db}_20260101_000000.dump")
    with pytest.raises(PlanningError, match="not a file in the backups directory"):
        tgt.plan("backup:/etc/passwd")
    with pytest.raises(PlanningError, match="not a file in the backups directory"):
        tgt.plan(f"backup:{tmp_path}/backups/../x.dump")


def test_checks_estimate_duration_from_measured_rate(voxflow_db: str, tmp_path: Path) -> None:
    path = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))

    unmeasured = target(voxflow_db, tmp_path).checks(f"backup:{path}")
    measured = target(voxflow_db, tmp_path, restore_rate=100.0).checks(f"backup:{path}")

    assert unmeasured[0].ok
    assert "no earlier restore measured" in unmeasured[1].detail
    assert measured[1].detail.startswith("about ")
    assert "measured on earlier restores" in measured[1].detail


def test_backup_restore_brings_back_the_dump_and_keeps_a_readable_pre_rollback_backup(
    voxflow_db: str, tmp_path: Path
) -> None:
    path = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('late@example.com'); DROP TABLE agents")
    plan = target(voxflow_db, tmp_path).plan(f"backup:{path}")
    memory: dict[str, Any] = {}

    restored, _, swapped, verified, kept = run_plan(plan, memory)

    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3
    assert scalar(swapped.data["aside"], "SELECT count(*) FROM users") == 4
    assert scalar(voxflow_db, "SELECT count(*) FROM agents") == 2
    pre = Path(kept.data["path"])
    assert pre.name == f"pre_rollback_{voxflow_db}_20260110_120000.dump"
    assert swapped.data["aside"] == f"{voxflow_db}_pre_rollback_20260110_120000"
    assert memory[f"database.pre_rollback_backup:{voxflow_db}"] == str(pre)
    assert inspect_archive(pre).readable
    assert restored.data["restore_bytes_per_second"] > 0
    assert "--jobs=2" in restored.data["command"]
    assert "users" in verified.output


def test_the_dump_after_maintenance_holds_the_state_the_swap_set_aside(
    voxflow_db: str, tmp_path: Path, make_db: Callable[[], str]
) -> None:
    path = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('late@example.com')")
    plan = target(voxflow_db, tmp_path).plan(f"backup:{path}")
    *_, kept = run_plan(plan)
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('after@example.com')")
    copy = make_db()

    subprocess.run(
        ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "-d", copy, kept.data["path"]],
        check=True,
        capture_output=True,
    )

    assert scalar(copy, "SELECT count(*) FROM users WHERE email = 'late@example.com'") == 1
    assert scalar(copy, "SELECT count(*) FROM users WHERE email = 'after@example.com'") == 0
    assert f"{voxflow_db}_pre_rollback_20260110_120000 (set aside at the swap)" in kept.summary


def test_the_dump_of_the_set_aside_database_refuses_when_no_swap_is_on_record(
    voxflow_db: str, tmp_path: Path
) -> None:
    step = PreRollbackBackup(connection(voxflow_db), tmp_path, 60.0, clock, aside=True)

    with pytest.raises(PermanentError, match=r"no swap of \S+ is on record"):
        step.run(StepContext.for_test())

    assert list(tmp_path.iterdir()) == []


def test_pre_rollback_backup_holds_the_state_before_the_rollback(
    voxflow_db: str, tmp_path: Path, make_db: Callable[[], str]
) -> None:
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('kept@example.com')")
    step = PreRollbackBackup(connection(voxflow_db), tmp_path, 60.0, clock)
    pre = Path(run_step(step, {}).data["path"])
    copy = make_db()

    subprocess.run(
        ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "-d", copy, str(pre)],
        check=True,
        capture_output=True,
    )

    assert scalar(copy, "SELECT count(*) FROM users WHERE email = 'kept@example.com'") == 1


def test_restore_errors_fail_the_step_with_pg_restores_message(
    make_db: Callable[[], str], pg_role: str, tmp_path: Path
) -> None:
    db = make_db()
    execute(db, f'CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO "{pg_role}"')
    path = dump(db, tmp_path, NOW)
    execute(db, f'ALTER TABLE owned OWNER TO postgres; DROP ROLE "{pg_role}"')
    step = RestoreIntoRecovery(connection(db), path, f"{db}_recovery", 1, 60.0)

    with pytest.raises(PermanentError) as failure:
        step.run(StepContext.for_test())

    assert f'role "{pg_role}" does not exist' in str(failure.value)
    assert f"{db} was not touched" in str(failure.value)
    assert scalar(db, "SELECT count(*) FROM owned") == 0
    assert scalar(f"{db}_recovery", "SELECT to_regclass('owned') IS NULL") is True


def test_password_goes_in_the_environment_never_on_the_command_line(
    voxflow_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-Pa55-never-logged"
    monkeypatch.setenv("RBT_DB_PASSWORD", secret)
    seen: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def recording_popen(argv: list[str], **kwargs: Any) -> Any:
        seen.append((list(argv), dict(kwargs["env"])))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    conn = connection(voxflow_db, password=SecretRef(env="RBT_DB_PASSWORD"))
    backup = run_step(PreRollbackBackup(conn, tmp_path, 60.0, clock), {})
    restore = run_step(
        RestoreIntoRecovery(conn, Path(backup.data["path"]), f"{voxflow_db}_recovery", 2, 60.0), {}
    )

    dumps = [(argv, env) for argv, env in seen if argv[0] == "pg_dump"]
    assert dumps and dumps[0][1]["PGPASSWORD"] == secret
    assert all(secret not in " ".join(argv) for argv, _ in seen)
    for result in (backup, restore):
        assert secret not in result.data["command"] + result.output + result.summary
    assert backup.data["command"].startswith("pg_dump --no-password --host=127.0.0.1")


def test_list_backups_recognises_pre_rollback_dumps(voxflow_db: str, tmp_path: Path) -> None:
    dump(voxflow_db, tmp_path, NOW - timedelta(hours=2))
    dump(voxflow_db, tmp_path, NOW - timedelta(hours=1), prefix="pre_rollback_")

    found = list_backups(tmp_path, voxflow_db)

    assert [b.pre_rollback for b in found] == [True, False]
    assert found[0].label(NOW).startswith("pre-rollback backup ")
    points = target(voxflow_db, tmp_path).points()
    assert [bool(p.avoid) for p in points] == [True, False]


@pytest.mark.parametrize(
    "how",
    ["truncated_99", "truncated_90", "truncated_50", "truncated_10", "flipped_50", "flipped_90"],
)
def test_a_dump_that_does_not_read_back_whole_is_refused_before_anything_runs(
    big_db: str, tmp_path: Path, how: str
) -> None:
    good = dump(big_db, tmp_path, NOW - timedelta(hours=1))
    bad = damaged(good, how)
    tgt = target(big_db, tmp_path)

    with pytest.raises(PlanningError, match="cannot be used") as refused:
        tgt.plan(f"backup:{bad}")
    check = tgt.checks(f"backup:{bad}")[0]

    assert "end of file" in str(refused.value) or "uncompress" in str(refused.value)
    assert (check.name, check.ok) == ("backup reads back whole", False)
    assert scalar(big_db, "SELECT count(*) FROM users") == 20000
    assert tgt.plan(f"backup:{good}").rollback


DAMAGE = ["truncated_99", "truncated_90", "truncated_50", "truncated_10", *TOC_FLIPS]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_restore_failing_half_way_leaves_the_live_database_as_it_was(
    big_db: str, tmp_path: Path, how: str
) -> None:
    path = dump(big_db, tmp_path, NOW - timedelta(hours=1))
    execute(big_db, "CREATE TABLE from_bad_release (id int)")
    plan = target(big_db, tmp_path, restore_jobs=1).plan(f"backup:{path}")
    memory: dict[str, Any] = {}
    path.write_bytes(damaged(path, how).read_bytes())  # damaged after the plan was approved

    with pytest.raises(PermanentError, match=f"{big_db} was not touched") as failed:
        run_step(plan.stage[0], memory)

    assert "pg_restore" in str(failed.value)
    assert scalar(big_db, "SELECT count(*) FROM users") == 20000
    assert scalar(big_db, "SELECT to_regclass('from_bad_release') IS NOT NULL") is True
    assert scalar(f"{big_db}_recovery", "SELECT to_regclass('users') IS NULL") is True


@pytest.mark.parametrize("how", list(TOC_FLIPS))
def test_a_flip_in_the_table_of_contents_that_still_parses_passes_the_read_back(
    big_db: str, tmp_path: Path, how: str
) -> None:
    """Why the restore is staged: reading the archive back whole cannot see these."""
    bad = damaged(dump(big_db, tmp_path, NOW - timedelta(hours=1)), how)

    assert inspect_archive(bad).readable
    assert target(big_db, tmp_path).checks(f"backup:{bad}")[0].ok


def test_a_dump_naming_a_role_the_server_lacks_is_refused_at_plan_time_with_the_role(
    make_db: Callable[[], str], pg_role: str, tmp_path: Path
) -> None:
    db = make_db()
    execute(db, f'CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO "{pg_role}"')
    execute(db, f'CREATE TABLE shared (id int); GRANT SELECT ON shared TO "{pg_role}"')
    path = dump(db, tmp_path, NOW)
    tgt = target(db, tmp_path)
    assert tgt.plan(f"backup:{path}").stage
    execute(db, f'DROP TABLE owned, shared; DROP ROLE "{pg_role}"')

    with pytest.raises(PlanningError, match=f"names role\\(s\\) {pg_role} as owner"):
        tgt.plan(f"backup:{path}")
    checks = tgt.checks(f"backup:{path}")
    read_back, roles = checks[0], checks[-1]

    assert read_back.ok
    assert (roles.name, roles.ok) == ("roles the dump needs exist", False)
    assert "pg_restore would stop there" in roles.detail


def test_a_flipped_owner_in_the_table_of_contents_is_refused_at_plan_time(
    big_db: str, tmp_path: Path
) -> None:
    bad = damaged(dump(big_db, tmp_path, NOW - timedelta(hours=1)), "table_owner")

    with pytest.raises(PlanningError, match="postgrer"):
        target(big_db, tmp_path).plan(f"backup:{bad}")


def test_a_dump_taken_after_the_newest_migration_is_never_the_default(
    voxflow_db: str, tmp_path: Path
) -> None:
    applied = NOW - timedelta(minutes=90)
    execute(
        voxflow_db,
        "ALTER TABLE schema_migrations ADD COLUMN applied_at timestamptz NOT NULL DEFAULT now();"
        f"UPDATE schema_migrations SET applied_at = '{(NOW - timedelta(days=3)).isoformat()}';"
        f"INSERT INTO schema_migrations VALUES ('002', '{applied.isoformat()}')",
    )
    before = dump(voxflow_db, tmp_path, NOW - timedelta(hours=2))
    after = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    tgt = target(voxflow_db, tmp_path)

    newest, older = tgt.points()

    assert newest.ref == f"backup:{after.resolve()}"
    assert newest.avoid == (
        "taken after migration 002 was applied at 2026-01-10 10:30:00 UTC: it has the change in it"
    )
    assert older.ref == tgt.default_ref() == f"backup:{before.resolve()}"
    assert not older.avoid


def test_when_every_dump_is_newer_than_the_migration_the_newest_stays_the_default(
    voxflow_db: str, tmp_path: Path
) -> None:
    execute(
        voxflow_db,
        "ALTER TABLE schema_migrations ADD COLUMN applied_at timestamptz NOT NULL DEFAULT now();"
        f"UPDATE schema_migrations SET applied_at = '{(NOW - timedelta(days=3)).isoformat()}'",
    )
    dump(voxflow_db, tmp_path, NOW - timedelta(hours=2))
    newest = dump(voxflow_db, tmp_path, NOW - timedelta(hours=1))
    tgt = target(voxflow_db, tmp_path)

    assert [p.avoid for p in tgt.points()] == ["", ""]
    assert tgt.default_ref() == f"backup:{newest.resolve()}"
