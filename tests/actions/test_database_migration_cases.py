"""Hand-written migrations as production has them, rolled back on the real PostgreSQL.

- golang-migrate: a down file with DROP INDEX CONCURRENTLY runs as `migrate down` runs it
  (database/postgres/postgres.go Run: the file in one Exec; migrate.go runMigrations: the row
  dirty before, clean after); a file mixing it with other statements fails under migrate too,
  so the bot refuses it before approval.
- Flyway: out-of-order migrations are undone in reverse installed_rank
  (documentation/Reference/Commands/Undo.md); the UNDO_SQL row carries what Flyway computes.
- Alembic: the real alembic with a branch and a merge revision, and with two heads on purpose.
- The procedures' format: a script PostgreSQL refuses in a transaction is refused; an empty
  one is named as a risk.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from actions.base import Level, PermanentError, PlanningError, StepContext, TemporaryError
from actions.database import DatabaseTarget
from actions.database.migration_steps import (
    AlembicDowngrade,
    FlywayUndo,
    GolangMigrateDown,
    run_alembic,
)
from actions.database.migrations import (
    FLYWAY_LOCK_MAGIC,
    flyway_checksum,
    flyway_lock_id,
    golang_lock_id,
)
from tests.fakes.migration_tools import (
    ALEMBIC_ENV,
    FLYWAY_TABLE,
    columns,
    golang_up,
    target,
    write,
)
from tests.fakes.pg import execute, pg, run_plan, run_step, scalar

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres


def index_exists(db: str, name: str) -> bool:
    """Say whether an index of that name exists."""
    return bool(scalar(db, f"SELECT to_regclass('{name}') IS NOT NULL"))


def levels(tgt: DatabaseTarget, ref: str) -> list[tuple[Level, str]]:
    """The verdict's findings for `ref` that are not OK."""
    return [(f.level, f.text) for f in tgt.evidence(ref) if f.level != Level.OK]


# -- golang-migrate

GOLANG = {
    "1_init.up.sql": "CREATE TABLE items (id int PRIMARY KEY, name text);",
    "1_init.down.sql": "DROP TABLE items;",
    "2_name_index.up.sql": "CREATE INDEX CONCURRENTLY items_name ON items (name);",
    "2_name_index.down.sql": "-- no lock on items\nDROP INDEX CONCURRENTLY items_name;\n",
}


def golang_row(db: str) -> list[tuple[int, bool]]:
    """The rows of golang-migrate's table."""
    with pg(db) as conn:
        return [(int(v), bool(d)) for v, d in conn.execute("SELECT * FROM schema_migrations")]


def test_golang_down_file_with_drop_index_concurrently_runs_as_migrate_runs_it(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    tgt = target(db, migrations)

    found = levels(tgt, "migration:1")
    plan = tgt.plan("migration:1")
    run_plan(plan)

    assert [(s.version, s.previous) for s in plan.rollback if isinstance(s, GolangMigrateDown)] == [
        (2, 1)
    ]
    assert found[0][0] == Level.RISKY
    assert "2_name_index.down.sql runs outside any transaction" in found[0][1]
    assert "stays dirty at 1" in found[0][1]
    assert any(n.startswith("risk: 2_name_index.down.sql") for n in plan.notes)
    assert not index_exists(db, "items_name")
    assert golang_row(db) == [(1, False)]


def test_golang_failed_down_file_leaves_the_row_dirty_as_migrate_does(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    step = target(db, migrations).plan("migration:1").rollback[0]
    execute(db, "DROP INDEX items_name")

    with pytest.raises(PermanentError, match=r"dirty at 1 if the file had started"):
        run_step(step, {})

    assert golang_row(db) == [(1, True)]
    with pytest.raises(PermanentError, match=r"is dirty at 1: the down file of 2 was started"):
        run_step(step, {})
    with pytest.raises(PlanningError, match="dirty at version 1"):
        target(db, migrations).plan("migration:1")


def test_golang_file_mixing_concurrently_with_other_statements_is_blocked_before_approval(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    down = "DROP INDEX CONCURRENTLY items_name;\nALTER TABLE items DROP COLUMN name;\n"
    migrations = write(tmp_path / "golang", {**GOLANG, "2_name_index.down.sql": down})
    golang_up(db, migrations)
    tgt = target(db, migrations)

    found = levels(tgt, "migration:1")

    assert found[0][0] == Level.BLOCKED
    assert "golang-migrate sends a file as one Exec" in found[0][1]
    with pytest.raises(PlanningError, match="Put it in a down file of its own"):
        tgt.plan("migration:1")
    assert index_exists(db, "items_name")
    assert golang_row(db) == [(2, False)]


def test_golang_down_waits_while_migrate_holds_its_lock(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    step = target(db, migrations).plan("migration:1").rollback[0]

    with pg(db) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (golang_lock_id(db, "schema_migrations"),))
        with pytest.raises(TemporaryError, match="a migrate run is in progress"):
            step.run(StepContext.for_test(timeout=10, memory={}))
    run_step(step, {})

    assert golang_row(db) == [(1, False)]


# -- Flyway

FLYWAY = {
    "V1__init.sql": "CREATE TABLE items (id int PRIMARY KEY);",
    "V2__add_a.sql": "ALTER TABLE items ADD COLUMN a int;",
    "V3__add_c.sql": "ALTER TABLE items ADD COLUMN c int;",
    "V4__add_b.sql": "ALTER TABLE items ADD COLUMN b int;",
    "U2__add_a.sql": "ALTER TABLE items DROP COLUMN a;",
    "U3__add_c.sql": "ALTER TABLE items DROP COLUMN c;\r\n-- undone\r\n",
    "U4__add_b.sql": "ALTER TABLE items DROP COLUMN b;",
}


def flyway_apply(db: str, directory: Path, order: list[str]) -> None:
    """Apply versioned migrations in the given order, recording rows as Flyway migrate does."""
    execute(db, FLYWAY_TABLE)
    for rank, version in enumerate(order, start=1):
        path = next(directory.glob(f"V{version}__*.sql"))
        execute(db, path.read_text())
        with pg(db) as conn:
            conn.execute(
                "INSERT INTO flyway_schema_history (installed_rank, version, description, type,"
                " script, checksum, installed_by, execution_time, success)"
                " VALUES (%s, %s, %s, 'SQL', %s, %s, current_user, 1, true)",
                (
                    rank,
                    version,
                    path.stem.split("__")[1].replace("_", " "),
                    path.name,
                    flyway_checksum(path.read_text()),
                ),
            )


def undo_rows(db: str) -> list[tuple[object, ...]]:
    """The UNDO_SQL rows, in installed_rank order."""
    with pg(db) as conn:
        return conn.execute(
            "SELECT installed_rank, version, description, type, script, checksum,"
            " installed_by = current_user, execution_time >= 0, success"
            " FROM flyway_schema_history WHERE type = 'UNDO_SQL' ORDER BY installed_rank"
        ).fetchall()


def test_flyway_out_of_order_migration_is_undone_where_it_was_applied(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_apply(db, migrations, ["1", "2", "4", "3"])
    tgt = target(db, migrations)

    points = [p.ref for p in tgt.points()]
    only_three = tgt.plan("migration:4")
    run_plan(only_three)
    columns_after_first = columns(db, "items")
    rest = tgt.plan("migration:1")
    run_plan(rest)

    assert points == [f"migration:{v}" for v in ("3", "4", "2", "1")]
    assert [s.version for s in only_three.rollback if isinstance(s, FlywayUndo)] == ["3"]
    assert columns_after_first == ["id", "a", "b"]
    assert [s.version for s in rest.rollback if isinstance(s, FlywayUndo)] == ["4", "2"]
    assert columns(db, "items") == ["id"]
    u3 = (migrations / "U3__add_c.sql").read_text()
    assert undo_rows(db) == [
        (5, "3", "add c", "UNDO_SQL", "U3__add_c.sql", flyway_checksum(u3), True, True, True),
        (
            6,
            "4",
            "add b",
            "UNDO_SQL",
            "U4__add_b.sql",
            flyway_checksum("ALTER TABLE items DROP COLUMN b;"),
            True,
            True,
            True,
        ),
        (
            7,
            "2",
            "add a",
            "UNDO_SQL",
            "U2__add_a.sql",
            flyway_checksum("ALTER TABLE items DROP COLUMN a;"),
            True,
            True,
            True,
        ),
    ]


def test_flyway_reapplied_version_counts_again_and_a_second_undo_is_corruption(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_apply(db, migrations, ["1", "2", "3"])
    run_plan(target(db, migrations).plan("migration:2"))
    execute(db, "ALTER TABLE items ADD COLUMN c int")
    execute(
        db,
        "INSERT INTO flyway_schema_history VALUES (5, '3', 'add c', 'SQL', 'V3__add_c.sql', 0,"
        " current_user, now(), 1, true)",
    )

    reapplied = [p.ref for p in target(db, migrations).points()]
    execute(
        db,
        "INSERT INTO flyway_schema_history VALUES (6, '3', 'add c', 'UNDO_SQL', 'U3__add_c.sql',"
        " 0, current_user, now(), 1, true), (7, '3', 'add c', 'UNDO_SQL', 'U3__add_c.sql', 0,"
        " current_user, now(), 1, true)",
    )

    assert reapplied == ["migration:3", "migration:2", "migration:1"]
    with pytest.raises(PlanningError, match=r"UNDO_SQL row 7 for version 3 follows no applied"):
        target(db, migrations).plan("migration:1")


def test_flyway_checksum_and_lock_key_match_java(tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on this machine")
    text = "\ufeffALTER TABLE items\r\n  DROP COLUMN c; -- é\rSELECT 1;\n\nSELECT 2;"
    (tmp_path / "u.sql").write_text(text, encoding="utf-8", newline="")
    (tmp_path / "Checksum.java").write_text(CHECKSUM_JAVA)
    table = '"flyway"."flyway_schema_history"'

    out = subprocess.run(
        [java, str(tmp_path / "Checksum.java"), str(tmp_path / "u.sql"), table],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()

    assert int(out[0]) == flyway_checksum(text)
    assert FLYWAY_LOCK_MAGIC + int(out[1]) == flyway_lock_id("flyway.flyway_schema_history")


def test_flyway_undo_waits_while_flyway_holds_its_lock(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_apply(db, migrations, ["1", "2"])
    step = target(db, migrations).plan("migration:1").rollback[0]

    with pg(db) as other, other.transaction():
        other.execute(
            "SELECT pg_advisory_xact_lock(%s)", (flyway_lock_id("flyway_schema_history"),)
        )
        with pytest.raises(TemporaryError, match="a flyway run is in progress"):
            step.run(StepContext.for_test(timeout=10, memory={}))
    run_step(step, {})

    assert columns(db, "items") == ["id"]


CHECKSUM_JAVA = """
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;

public class Checksum {
    public static void main(String[] args) throws IOException {
        CRC32 crc = new CRC32();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(
                new FileInputStream(args[0]), StandardCharsets.UTF_8), 4096)) {
            String line = r.readLine();
            if (line != null && line.startsWith("\\uFEFF")) line = line.substring(1);
            while (line != null) {
                crc.update(line.getBytes(StandardCharsets.UTF_8));
                line = r.readLine();
            }
        }
        System.out.print((int) crc.getValue() + " " + args[1].hashCode());
    }
}
"""


def test_flyway_undo_of_concurrently_runs_outside_a_transaction_and_mixing_is_blocked(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    files = {
        "V1__init.sql": "CREATE TABLE items (id int PRIMARY KEY, a int);",
        "V2__a_index.sql": "CREATE INDEX CONCURRENTLY items_a ON items (a);",
        "U2__a_index.sql": "DROP INDEX CONCURRENTLY items_a;",
    }
    migrations = write(tmp_path / "flyway", files)
    flyway_apply(db, migrations, ["1", "2"])
    tgt = target(db, migrations)

    risky = levels(tgt, "migration:1")
    run_plan(tgt.plan("migration:1"))
    undone = [r[1:5] + r[6:] for r in undo_rows(db)]
    (migrations / "U2__a_index.sql").write_text(
        "DROP INDEX CONCURRENTLY items_a; UPDATE items SET a = 0;"
    )
    execute(db, "DELETE FROM flyway_schema_history WHERE type = 'UNDO_SQL'")
    blocked = levels(tgt, "migration:1")

    assert risky[0][0] == Level.RISKY and "outside a transaction, as Flyway" in risky[0][1]
    assert not index_exists(db, "items_a")
    assert undone == [("2", "a index", "UNDO_SQL", "U2__a_index.sql", True, True, True)]
    assert blocked[0][0] == Level.BLOCKED and "unless mixed=true" in blocked[0][1]


def test_flyway_baseline_is_the_floor(make_db: Callable[[], str], tmp_path: Path) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", {k: v for k, v in FLYWAY.items() if "1__" not in k})
    execute(db, FLYWAY_TABLE + "CREATE TABLE items (id int PRIMARY KEY);")
    execute(
        db,
        "INSERT INTO flyway_schema_history VALUES (1, '1', '<< Flyway Baseline >>', 'BASELINE',"
        " '<< Flyway Baseline >>', NULL, current_user, now(), 0, true),"
        " (2, '2', 'add a', 'SQL', 'V2__add_a.sql', 0, current_user, now(), 1, true);"
        " ALTER TABLE items ADD COLUMN a int;",
    )
    tgt = target(db, migrations)

    run_plan(tgt.plan("migration:1"))

    assert columns(db, "items") == ["id"]
    with pytest.raises(PlanningError, match=r"no applied migration .* is newer than 1"):
        tgt.plan("migration:1")


# -- Alembic

REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down}
branch_labels = {labels}


def upgrade():
    {up}


def downgrade():
    {down_op}
"""


def alembic_dir(directory: Path, revisions: list[tuple[str, str, str, str, str]]) -> list[str]:
    """Write an Alembic environment; each revision is (rev, down, labels, upgrade, downgrade)."""
    versions = directory / "versions"
    versions.mkdir(parents=True)
    (directory / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    (directory / "env.py").write_text(ALEMBIC_ENV)
    for rev, down, labels, up, down_op in revisions:
        (versions / f"{rev}.py").write_text(
            REVISION.format(rev=rev, down=down, labels=labels, up=up, down_op=down_op)
        )
    return [sys.executable, "-m", "alembic", "-c", str(directory / "alembic.ini")]


def column(table: str, name: str) -> tuple[str, str]:
    """An add_column / drop_column pair."""
    return (
        f'op.add_column("{table}", sa.Column("{name}", sa.Integer))',
        f'op.drop_column("{table}", "{name}")',
    )


BRANCH_AND_MERGE = [
    (
        "a1",
        "None",
        "None",
        'op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("items")',
    ),
    ("b2", '"a1"', "None", *column("items", "b")),
    ("c3", '"a1"', "None", *column("items", "c")),
    ("d4", '("b2", "c3")', "None", *column("items", "d")),
]


def alembic(
    db: str, tmp_path: Path, revisions: list[tuple[str, str, str, str, str]]
) -> tuple[DatabaseTarget, list[str]]:
    """Upgrade a database to every head with the real alembic; return the target."""
    command = alembic_dir(tmp_path / "alembic", revisions)
    tgt = target(db, tmp_path / "alembic", alembic_command=command)
    runner = AlembicDowngrade(tgt.params.connection, "alembic_version", command, None, "", 60)
    assert run_alembic(runner, ["upgrade", "heads"], timeout=120).returncode == 0
    listed = run_alembic(runner, ["heads"], timeout=120).stdout.splitlines()
    return tgt, [line.split()[0] for line in listed if line.strip()]


def version_rows(db: str) -> list[str]:
    """The rows of alembic_version, sorted."""
    with pg(db) as conn:
        return sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))


def test_alembic_merge_revision_is_one_head_and_downgrades_through_the_merge(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    tgt, heads = alembic(db, tmp_path, BRANCH_AND_MERGE)

    listed = tgt.points()
    points = [p.ref for p in listed]
    plan = tgt.plan("migration:a1")
    run_plan(plan)

    assert heads == ["d4"]
    assert {p.ref: p.label.split(" · ")[1] for p in listed} == {
        "migration:d4": "current",
        "migration:c3": "rolls back 1 newer migration(s)",
        "migration:b2": "rolls back 1 newer migration(s)",
        "migration:a1": "rolls back 3 newer migration(s)",
    }
    assert points[0] == "migration:d4" and set(points) == {
        f"migration:{r}" for r in ("a1", "b2", "c3", "d4")
    }
    assert (
        plan.notes[1]
        == f"Alembic downgrades {', '.join(points[:3]).replace('migration:', '')} to a1"
    )
    assert columns(db, "items") == ["id"]
    assert version_rows(db) == ["a1"]


def test_alembic_downgrade_to_a_merge_parent_keeps_both_parents(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    tgt, _ = alembic(db, tmp_path, BRANCH_AND_MERGE)

    plan = tgt.plan("migration:b2")
    run_plan(plan)
    again = run_step(plan.rollback[0], {})

    assert plan.notes[2].startswith("alembic_version then holds b2, c3")
    assert sorted(columns(db, "items")) == ["b", "c", "id"]
    assert version_rows(db) == ["b2", "c3"]
    assert again.skipped


def test_alembic_two_heads_on_purpose_roll_back_one_branch(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    audit = (
        "x1",
        "None",
        '("audit",)',
        'op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("audit")',
    )
    tgt, heads = alembic(db, tmp_path, [*BRANCH_AND_MERGE[:3], audit])

    plan = tgt.plan("migration:a1")
    run_plan(plan)

    assert sorted(heads) == ["b2", "c3", "x1"]
    assert plan.notes[2].startswith("alembic_version then holds a1, x1")
    assert columns(db, "items") == ["id"]
    assert columns(db, "audit") == ["id"]
    assert version_rows(db) == ["a1", "x1"]


# -- the procedures' format


def procedures(db: str, tmp_path: Path, script: str) -> DatabaseTarget:
    """Apply migration 002 (an index) and write its rollback script."""
    execute(
        db,
        "CREATE TABLE schema_migrations (version text PRIMARY KEY);"
        " CREATE TABLE items (id int, a int); CREATE INDEX items_a ON items (a);"
        " INSERT INTO schema_migrations VALUES ('001'), ('002')",
    )
    return target(db, write(tmp_path / "m", {"rollback_002.sql": script}))


def test_procedures_script_postgresql_refuses_in_a_transaction_is_blocked(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    tgt = procedures(db, tmp_path, "DROP INDEX CONCURRENTLY items_a;")

    found = levels(tgt, "migration:001")

    assert found[0][0] == Level.BLOCKED
    assert "PostgreSQL refuses inside the transaction" in found[0][1]
    assert index_exists(db, "items_a")


def test_empty_down_script_is_named_as_a_risk(make_db: Callable[[], str], tmp_path: Path) -> None:
    db = make_db()
    tgt = procedures(db, tmp_path, "-- nothing to undo\n")

    found = levels(tgt, "migration:001")
    run_plan(tgt.plan("migration:001"))

    assert (
        Level.RISKY,
        "rollback_002.sql is empty: rolling back 002 changes only "
        "schema_migrations; what migration 002 changed stays",
    ) in found
    assert scalar(db, "SELECT string_agg(version, ',') FROM schema_migrations") == "001"


def test_script_with_its_own_commit_is_named_as_a_risk_and_runs(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    tgt = procedures(db, tmp_path, "BEGIN;\nDROP INDEX items_a;\nCOMMIT;\n")

    found = levels(tgt, "migration:001")
    run_plan(tgt.plan("migration:001"))

    assert any(
        level == Level.RISKY and "rollback_002.sql ends transactions itself" in text
        for level, text in found
    )
    assert not index_exists(db, "items_a")
    assert scalar(db, "SELECT string_agg(version, ',') FROM schema_migrations") == "001"


# -- bookkeeping tables under other names and schemas


def test_flyway_history_under_its_old_name_is_flyway_not_the_procedures_format(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "flyway", FLYWAY)
    flyway_apply(db, migrations, ["1", "2"])
    execute(db, "ALTER TABLE flyway_schema_history RENAME TO schema_version")
    tgt = target(db, migrations, migrations_table="schema_version")

    plan = tgt.plan("migration:1")
    run_plan(plan)

    assert plan.notes[0] == "Migration tool: Flyway, table schema_version"
    assert columns(db, "items") == ["id"]
    assert scalar(db, "SELECT count(*) FROM schema_version WHERE type = 'UNDO_SQL'") == 1


def test_golang_table_in_another_schema_is_rolled_back_there(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    db = make_db()
    migrations = write(tmp_path / "golang", GOLANG)
    golang_up(db, migrations)
    execute(db, "CREATE SCHEMA migrate; ALTER TABLE schema_migrations SET SCHEMA migrate")
    tgt = target(db, migrations, migrations_table="migrate.schema_migrations")
    step = tgt.plan("migration:1").rollback[0]

    with pg(db) as other:
        lock = golang_lock_id(db, "migrate.schema_migrations")
        other.execute("SELECT pg_advisory_lock(%s)", (lock,))
        with pytest.raises(TemporaryError, match="a migrate run is in progress"):
            step.run(StepContext.for_test(timeout=10, memory={}))
    run_step(step, {})

    assert scalar(db, "SELECT version FROM migrate.schema_migrations WHERE NOT dirty") == 1
    assert not index_exists(db, "items_name")
