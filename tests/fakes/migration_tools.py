"""Migration tools' databases: the schemas Alembic, Flyway and golang-migrate leave, and
how to read them."""

from __future__ import annotations

from pathlib import Path

from actions.database import DatabaseTarget, VerificationQuery
from tests.fakes.pg import execute, params, pg

CHECK = [VerificationQuery(name="alive", sql="SELECT 1 AS one", nonzero=["one"])]


def target(db: str, migrations: Path, **overrides: object) -> DatabaseTarget:
    """Build a migration target with a trivial verification query."""
    return DatabaseTarget(
        params(
            db,
            methods=["migration"],
            migrations=str(migrations),
            backups=str(migrations.parent / "backups"),
            verification=CHECK,
            **overrides,
        )
    )


def columns(db: str, table: str) -> list[str]:
    """Return a table's column names in order."""
    with pg(db) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
            " ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    return [r[0] for r in rows]


def write(directory: Path, files: dict[str, str]) -> Path:
    """Write a migration directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def golang_up(db: str, directory: Path) -> None:
    """Apply every up file as golang-migrate does: dirty, run, clean; one row."""
    execute(
        db,
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
    )
    ups = sorted(directory.glob("*.up.sql"), key=lambda p: int(p.name.split("_")[0]))
    for path in ups:
        version = int(path.name.split("_")[0])
        execute(
            db,
            f"TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES ({version}, true)",
        )
        execute(db, path.read_text())
        execute(
            db,
            f"TRUNCATE schema_migrations; INSERT INTO schema_migrations VALUES ({version}, false)",
        )


FLYWAY_TABLE = """
CREATE TABLE "flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk"
    PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success");
"""


ALEMBIC_ENV = """
import os

from alembic import context
from sqlalchemy import create_engine

url = "postgresql+psycopg://{PGUSER}@{PGHOST}:{PGPORT}/{PGDATABASE}".format(**os.environ)
with create_engine(url).connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""
