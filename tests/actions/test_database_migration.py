"""The procedures' migration format: newest first, one transaction each, missing scripts refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.base import PermanentError, PlanningError
from actions.database import DatabaseTarget, PreRollbackBackup, RollbackMigration
from tests.fakes.pg import execute, params, run_plan, run_step, scalar

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres

APPLIED = """
CREATE TABLE rollback_log (id serial PRIMARY KEY, version text NOT NULL);
ALTER TABLE agents ADD COLUMN voice text;
CREATE TABLE call_logs (id serial PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('002'), ('003'), ('010');
"""

SCRIPTS = {
    "010": "INSERT INTO rollback_log (version) VALUES ('010');",
    "003": "DROP TABLE call_logs; INSERT INTO rollback_log (version) VALUES ('003');",
    "002": "ALTER TABLE agents DROP COLUMN voice;"
    " INSERT INTO rollback_log (version) VALUES ('002');",
}


@pytest.fixture
def migrated(voxflow_db: str, tmp_path: Path) -> tuple[str, Path]:
    """Apply migrations 002, 003 and 010 and write all their rollback scripts."""
    execute(voxflow_db, APPLIED)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for version, script in SCRIPTS.items():
        (migrations / f"{version}_change.sql").write_text("-- forward\n")
        (migrations / f"rollback_{version}.sql").write_text(script)
    return voxflow_db, migrations


def target(db: str, migrations: Path) -> DatabaseTarget:
    """Build a migration-method target."""
    backups = migrations.parent / "backups"
    return DatabaseTarget(
        params(db, methods=["migration"], migrations=str(migrations), backups=str(backups))
    )


def versions(db: str) -> list[str]:
    """Return the applied versions, oldest first."""
    return str(
        scalar(db, "SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations")
    ).split(",")


def test_points_list_applied_versions_with_the_current_one_marked(
    migrated: tuple[str, Path],
) -> None:
    points = target(*migrated).points()

    assert [p.ref for p in points] == [f"migration:{v}" for v in ("010", "003", "002", "001")]
    assert points[0].is_current and not points[1].is_current
    assert "rolls back 2 newer" in points[2].label


def test_rollback_runs_scripts_newest_first_and_deletes_their_rows(
    migrated: tuple[str, Path],
) -> None:
    db, migrations = migrated
    plan = target(db, migrations).plan("migration:002")

    results = run_plan(plan)

    assert plan.notes[:3] == [
        "Migration tool: the procedures' schema_migrations + rollback_<version>.sql, table "
        "schema_migrations",
        "roll back 010 with rollback_010.sql",
        "roll back 003 with rollback_003.sql",
    ]
    assert isinstance(plan.prepare[0], PreRollbackBackup)
    assert versions(db) == ["001", "002"]
    assert scalar(db, "SELECT string_agg(version, ',' ORDER BY id) FROM rollback_log") == "010,003"
    assert scalar(db, "SELECT to_regclass('call_logs') IS NULL") is True
    assert "total_users" in results[-1].output


def test_missing_rollback_script_stops_the_plan_before_anything_runs(
    migrated: tuple[str, Path],
) -> None:
    db, migrations = migrated
    (migrations / "rollback_003.sql").unlink()
    tgt = target(db, migrations)

    for force in (False, True):
        with pytest.raises(PlanningError, match=r"no down script for migration\(s\) 003"):
            tgt.plan("migration:001", force=force)
    checks = tgt.checks("migration:001")
    assert [c.ok for c in checks] == [False]
    assert "only deleted bookkeeping rows" in checks[0].detail
    assert versions(db) == ["001", "002", "003", "010"]
    assert scalar(db, "SELECT to_regclass('call_logs') IS NOT NULL") is True


def test_failing_script_leaves_the_database_at_a_known_version(
    migrated: tuple[str, Path],
) -> None:
    db, migrations = migrated
    (migrations / "rollback_003.sql").write_text("DROP TABLE call_logs; SELECT 1/0;")
    plan = target(db, migrations).plan("migration:001")
    memory: dict[str, object] = {}
    run_step(plan.rollback[0], memory)

    with pytest.raises(PermanentError, match=r"stays at version 003 \(.*\): division by zero"):
        run_step(plan.rollback[1], memory)

    assert versions(db) == ["001", "002", "003"]
    assert scalar(db, "SELECT to_regclass('call_logs') IS NOT NULL") is True


def test_rolling_back_an_already_removed_version_is_skipped(migrated: tuple[str, Path]) -> None:
    db, migrations = migrated
    step = target(db, migrations).plan("migration:003").rollback[0]
    assert isinstance(step, RollbackMigration)
    run_step(step, {})

    again = run_step(step, {})

    assert again.skipped
    assert scalar(db, "SELECT count(*) FROM rollback_log") == 1


def test_nothing_newer_than_the_target_is_refused(migrated: tuple[str, Path]) -> None:
    with pytest.raises(PlanningError, match=r"no applied migration .* is newer than 010"):
        target(*migrated).plan("migration:010")


def test_method_not_allowed_for_the_target_is_refused(migrated: tuple[str, Path]) -> None:
    with pytest.raises(PlanningError, match="backup rollback is not allowed"):
        target(*migrated).plan("backup:/tmp/x.dump")


def test_migrations_table_name_is_quoted_as_an_identifier(voxflow_db: str, tmp_path: Path) -> None:
    execute(
        voxflow_db,
        'CREATE TABLE "Odd Table" (version text); INSERT INTO "Odd Table" VALUES (\'7\')',
    )
    tgt = DatabaseTarget(
        params(
            voxflow_db,
            methods=["migration"],
            migrations_table="Odd Table",
            migrations=str(tmp_path),
        )
    )

    assert tgt.applied_migrations() == ["7"]
