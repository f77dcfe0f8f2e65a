"""Migration tools as they are: one migration directory per tool, applied by that tool's own
rules, rolled back by the bot, then the schema and the bookkeeping table checked.

- golang-migrate: the table and the up/down bookkeeping follow database/postgres/postgres.go
  (ensureVersionTable: `version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL`;
  SetVersion: TRUNCATE then INSERT) and migrate.go (runMigrations: SetVersion(v, dirty=true),
  run the file, SetVersion(v, false)).
- Flyway: the table as flyway-core creates it on PostgreSQL
  (org/flywaydb/core/internal/database/postgresql/createMetaDataTable.sql); versions applied
  in MigrationVersion order, repeatables (`R__`) after them with a NULL version.
- Alembic: the real alembic (the bot's own dependency) upgrades and the bot downgrades.
- Supabase CLI: supabase_migrations.schema_migrations as pkg/migration/history.go creates it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from actions.base import PlanningError
from actions.database.migration_steps import (
    AlembicDowngrade,
    FlywayUndo,
    GolangMigrateDown,
    RollbackMigration,
    run_alembic,
)
from actions.database.migrations import version_key
from tests.fakes.migration_tools import (
    ALEMBIC_ENV,
    FLYWAY_TABLE,
    columns,
    golang_up,
    target,
    write,
)
from tests.fakes.pg import execute, pg, run_plan, scalar

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres

# -- golang-migrate

GOLANG = {
    "1_init.up.sql": "CREATE TABLE items (id int PRIMARY KEY);",
    "1_init.down.sql": "DROP TABLE items;",
    "2_add_name.up.sql": "ALTER TABLE items ADD COLUMN name text;",
    "2_add_name.down.sql": "ALTER TABLE items DROP COLUMN name;",
    "10_add_price.up.sql": "ALTER TABLE items ADD COLUMN price int;",
    "10_add_price.down.sql": "ALTER TABLE items DROP COLUMN price;",
}


def test_golang_migrate_rolls_back_with_down_files_and_keeps_its_one_row(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    tgt = target(db, migrations)

    points = tgt.points()
    plan = tgt.plan("migration:1")
    run_plan(plan)

    assert [p.ref for p in points] == ["migration:10", "migration:2", "migration:1"]
    assert points[0].label.startswith("golang-migrate migration 10")
    assert plan.notes[0] == "Migration tool: golang-migrate, table schema_migrations"
    assert [type(s) for s in plan.rollback] == [GolangMigrateDown, GolangMigrateDown]
    assert columns(db, "items") == ["id"]
    with pg(db) as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [
            (1, False)
        ]


def test_golang_migrate_dirty_table_is_refused(make_db: Callable[[], str], tmp_path: Path) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    execute(db, "UPDATE schema_migrations SET dirty = true")

    with pytest.raises(PlanningError, match="dirty at version 10"):
        target(db, migrations).plan("migration:1")
    assert scalar(db, "SELECT version FROM schema_migrations") == 10


def test_golang_migrate_missing_down_file_is_refused_and_nothing_runs(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    (migrations / "2_add_name.down.sql").unlink()

    for force in (False, True):
        with pytest.raises(PlanningError, match=r"no down script for migration\(s\) 2 "):
            target(db, migrations).plan("migration:1", force=force)
    assert columns(db, "items") == ["id", "name", "price"]
    assert scalar(db, "SELECT version FROM schema_migrations") == 10


# -- Flyway


FLYWAY = {
    "V1__init.sql": "CREATE TABLE items (id int PRIMARY KEY);",
    "V1_9__add_a.sql": "ALTER TABLE items ADD COLUMN a int;",
    "V1_10__add_b.sql": "ALTER TABLE items ADD COLUMN b int;",
    "V1_11__add_c.sql": "ALTER TABLE items ADD COLUMN c int;",
    "R__items_view.sql": "CREATE OR REPLACE VIEW items_view AS SELECT id FROM items;",
    "U1_9__add_a.sql": "ALTER TABLE items DROP COLUMN a;",
    "U1_10__add_b.sql": "ALTER TABLE items DROP COLUMN b;",
    "U1_11__add_c.sql": "ALTER TABLE items DROP COLUMN c;",
}


def flyway_migrate(db: str, directory: Path) -> None:
    """Apply versioned migrations in Flyway's version order, then repeatables; record rows."""
    execute(db, FLYWAY_TABLE)
    versioned = sorted(
        (p for p in directory.glob("V*__*.sql")),
        key=lambda p: version_key(p.name[1:].split("__")[0].replace("_", ".")),
    )
    for rank, path in enumerate([*versioned, *sorted(directory.glob("R__*.sql"))], start=1):
        execute(db, path.read_text())
        head, description = path.stem.split("__")
        version = None if head == "R" else head[1:].replace("_", ".")
        with pg(db) as conn:
            conn.execute(
                "INSERT INTO flyway_schema_history (installed_rank, version, description, type,"
                " script, checksum, installed_by, execution_time, success)"
                " VALUES (%s, %s, %s, 'SQL', %s, 0, current_user, 1, true)",
                (rank, version, description.replace("_", " "), path.name),
            )


def test_flyway_undoes_in_semantic_version_order_and_records_undo_rows(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_migrate(db, migrations)
    tgt = target(db, migrations)

    points = tgt.points()
    plan = tgt.plan("migration:1.9")
    run_plan(plan)

    assert [p.ref for p in points] == [f"migration:{v}" for v in ("1.11", "1.10", "1.9", "1")]
    assert [s.version for s in plan.rollback if isinstance(s, FlywayUndo)] == ["1.11", "1.10"]
    assert plan.notes[0] == "Migration tool: Flyway, table flyway_schema_history"
    assert columns(db, "items") == ["id", "a"]
    with pg(db) as conn:
        undo = conn.execute(
            "SELECT installed_rank, version, type, script, success FROM flyway_schema_history"
            " WHERE type = 'UNDO_SQL' ORDER BY installed_rank"
        ).fetchall()
    assert undo == [
        (6, "1.11", "UNDO_SQL", "U1_11__add_c.sql", True),
        (7, "1.10", "UNDO_SQL", "U1_10__add_b.sql", True),
    ]
    assert tgt.points()[0].ref == "migration:1.9"
    assert scalar(db, "SELECT count(*) FROM items_view") == 0


def test_flyway_failed_row_is_refused(make_db: Callable[[], str], tmp_path: Path) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_migrate(db, migrations)
    execute(
        db,
        "INSERT INTO flyway_schema_history VALUES (9, '1.12', 'broken', 'SQL', 'V1_12__broken.sql',"
        " 0, current_user, now(), 1, false)",
    )

    with pytest.raises(PlanningError, match=r"failed migration\(s\) 1.12: run flyway repair"):
        target(db, migrations).plan("migration:1.9")


def test_flyway_missing_undo_script_is_refused(make_db: Callable[[], str], tmp_path: Path) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_migrate(db, migrations)
    (migrations / "U1_10__add_b.sql").unlink()

    with pytest.raises(PlanningError, match=r"no down script for migration\(s\) 1.10 "):
        target(db, migrations).plan("migration:1")
    assert columns(db, "items") == ["id", "a", "b", "c"]


# -- Alembic


REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down}


def upgrade():
    {up}


def downgrade():
    {down_op}
"""


def alembic_dir(directory: Path) -> list[str]:
    """Write an Alembic environment with three revisions; return the alembic command."""
    versions = directory / "versions"
    versions.mkdir(parents=True)
    (directory / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    (directory / "env.py").write_text(ALEMBIC_ENV)
    revisions = [
        (
            "a1",
            None,
            'op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))',
            'op.drop_table("items")',
        ),
        (
            "b2",
            '"a1"',
            'op.add_column("items", sa.Column("name", sa.Text))',
            'op.drop_column("items", "name")',
        ),
        (
            "c3",
            '"b2"',
            'op.add_column("items", sa.Column("price", sa.Integer))',
            'op.drop_column("items", "price")',
        ),
    ]
    for rev, down, up, down_op in revisions:
        (versions / f"{rev}.py").write_text(
            REVISION.format(rev=rev, down=down, up=up, down_op=down_op)
        )
    return [sys.executable, "-m", "alembic", "-c", str(directory / "alembic.ini")]


def test_alembic_downgrades_through_its_own_command(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    command = alembic_dir(tmp_path / "alembic")
    tgt = target(db, tmp_path / "alembic", alembic_command=command)
    upgrade = AlembicDowngrade(tgt.params.connection, "alembic_version", command, None, "", 60)

    assert run_alembic(upgrade, ["upgrade", "head"], timeout=60).returncode == 0
    points = tgt.points()
    plan = tgt.plan("migration:a1")
    run_plan(plan)

    assert [p.ref for p in points] == ["migration:c3", "migration:b2", "migration:a1"]
    assert plan.notes == [
        "Migration tool: Alembic, table alembic_version",
        "Alembic downgrades c3, b2 to a1",
    ]
    assert columns(db, "items") == ["id"]
    assert scalar(db, "SELECT version_num FROM alembic_version") == "a1"


def test_alembic_without_a_command_is_refused(make_db: Callable[[], str], tmp_path: Path) -> None:
    db = make_db()
    execute(
        db,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
        " INSERT INTO alembic_version VALUES ('c3')",
    )

    with pytest.raises(PlanningError, match="set alembic_command"):
        target(db, tmp_path).plan("migration:a1")


# -- Supabase CLI and unknown tools


def test_supabase_cli_table_is_detected_and_rolled_back(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    execute(
        db,
        "CREATE SCHEMA supabase_migrations;"
        " CREATE TABLE supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY,"
        " statements text[], name text);"
        " CREATE TABLE items (id int); ALTER TABLE items ADD COLUMN note text;"
        " INSERT INTO supabase_migrations.schema_migrations VALUES"
        " ('20240101000000', '{}', 'init'), ('20240202000000', '{}', 'note')",
    )
    migrations = write(
        tmp_path / "supabase",
        {"rollback_20240202000000.sql": "ALTER TABLE items DROP COLUMN note;"},
    )

    plan = target(db, migrations).plan("migration:20240101000000")
    run_plan(plan)

    assert plan.notes[0].startswith("Migration tool: Supabase CLI")
    assert isinstance(plan.rollback[0], RollbackMigration)
    assert columns(db, "items") == ["id"]
    assert (
        scalar(db, "SELECT string_agg(version, ',') FROM supabase_migrations.schema_migrations")
        == "20240101000000"
    )


def test_an_unknown_migration_table_is_refused_naming_what_was_found(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    execute(db, "CREATE TABLE _prisma_migrations (id varchar(36) PRIMARY KEY, migration_name text)")

    with pytest.raises(
        PlanningError, match=r"found public._prisma_migrations \(Prisma has no down"
    ):
        target(db, tmp_path).plan("migration:1")


def test_flyway_version_order_is_semantic() -> None:
    assert sorted(["1.10", "1.9", "1.11", "1", "2.0.1"], key=version_key) == [
        "1",
        "1.9",
        "1.10",
        "1.11",
        "2.0.1",
    ]
