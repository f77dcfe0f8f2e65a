"""Migration rollback: read the applied versions, undo one migration and delete its row.

The rollback script and the delete run in one transaction, so a failed script leaves the
database at its version. Rollback scripts come from the configured migrations directory,
never from Slack; the migrations table's name is quoted with psycopg.sql.Identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions.base import PermanentError, StepContext, StepResult
from actions.database.params import DatabaseConnection
from actions.database.pgtools import connect


def version_key(version: str) -> tuple[int, int, str]:
    """Order migration versions: numeric ones by value, then the others by text."""
    return (0, int(version), version) if version.isdigit() else (1, 0, version)


def table_identifier(name: str) -> sql.Identifier:
    """Quote `schema.table` or `table` as an identifier."""
    return sql.Identifier(*name.split("."))


def applied_versions(conn: DatabaseConnection, table: str) -> list[str]:
    """Read applied migration versions from `table`, newest first."""
    with connect(conn) as pg:
        rows = pg.execute(
            sql.SQL("SELECT version::text FROM {}").format(table_identifier(table))
        ).fetchall()
    return sorted((str(row[0]) for row in rows), key=version_key, reverse=True)


@dataclass
class RollbackMigration:
    """Undo one migration and delete its row, in one transaction."""

    conn: DatabaseConnection
    table: str
    version: str
    script: Path | None
    timeout: float
    name = "database.migration_rollback"
    idempotent = True

    def describe(self) -> str:
        """Say which script runs and which row goes."""
        db, table, version = self.conn.dbname, self.table, self.version
        if self.script is None:
            return (
                f"On {db}: delete version {version} from {table} WITHOUT undoing its changes "
                f"(no rollback_{version}.sql; forced by the requester)"
            )
        return (
            f"On {db}: run {self.script} and delete version {version} from {table}, "
            "in one transaction"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Run the script and the delete together; skip when the row is already gone."""
        try:
            with connect(self.conn, timeout=ctx.remaining()) as pg, pg.transaction():
                applied = self._apply(pg)
        except psycopg.Error as error:
            raise PermanentError(
                f"rolling back migration {self.version} failed, {self.conn.dbname} stays at "
                f"version {self.version}: {str(error).strip()}"
            ) from error
        if not applied:
            return StepResult(summary=f"Migration {self.version} is not applied", skipped=True)
        how = "rollback script run" if self.script else "row deleted only (forced)"
        return StepResult(
            summary=f"Rolled back migration {self.version}: {how}",
            data={"version": self.version, "forced": self.script is None},
        )

    def _apply(self, pg: psycopg.Connection[Any]) -> bool:
        """Run the script and delete the row; False when the row was already gone."""
        where = sql.SQL("FROM {} WHERE version::text = %s").format(table_identifier(self.table))
        if pg.execute(sql.SQL("SELECT 1 ") + where, (self.version,)).fetchone() is None:
            return False
        if self.script is not None:
            pg.execute(self.script.read_bytes())
        pg.execute(sql.SQL("DELETE ") + where, (self.version,))
        return True
