"""Planning a migration rollback: the detected tool's versions, scripts and steps.

Everything that can refuse (unknown table, dirty or failed bookkeeping, a missing down
script, a target that is not applied) refuses here, at plan time, before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from actions.base import Action, PlanningError
from actions.database.migrations import (
    AlembicDowngrade,
    Detected,
    FlywayUndo,
    GolangMigrateDown,
    RollbackMigration,
    alembic_chain,
    alembic_current,
    applied_simple,
    detect,
    flyway_applied,
    golang_state,
    run_alembic,
    version_key,
)
from actions.database.params import DatabaseParams
from actions.database.pgtools import connect, planning_errors


@dataclass(frozen=True)
class MigrationRollback:
    """The steps of a migration rollback and what the plan says about them."""

    steps: list[Action]
    notes: list[str]


class MigrationPlanner:
    """One database's migrations as its tool keeps them."""

    def __init__(self, params: DatabaseParams) -> None:
        self.params = params
        self.conn = params.connection

    def detect(self) -> Detected:
        """Detect the migration tool from its table."""
        with (
            planning_errors(f"reading the migration tables of {self.conn.dbname}"),
            connect(self.conn) as pg,
        ):
            return detect(pg, self.params.migrations_table)

    def applied(self, found: Detected | None = None) -> list[str]:
        """Return the applied versions (revisions), newest first."""
        found = found or self.detect()
        with (
            planning_errors(f"reading {found.table} of {self.conn.dbname}"),
            connect(self.conn) as pg,
        ):
            if found.tool in ("procedures", "supabase"):
                return applied_simple(pg, found.table)
            if found.tool == "flyway":
                return [r.version for r in flyway_applied(pg, found.table)]
            if found.tool == "golang-migrate":
                return self._golang_applied(golang_state(pg, found.table), found.table)
            current = alembic_current(pg, found.table)
        return self._alembic_applied(current)

    def _golang_applied(self, state: tuple[int, bool] | None, table: str) -> list[str]:
        if state is None:
            return []
        version, dirty = state
        if dirty:
            raise PlanningError(
                f"{table} is dirty at version {version}: a migration failed half-way; a person "
                "must check the schema and run migrate force; the bot does not roll back from it"
            )
        files = sorted({int(v) for v in self._golang_files("up")} | {version}, reverse=True)
        return [str(v) for v in files if v <= version]

    def _golang_files(self, direction: str) -> dict[str, Path]:
        pattern = re.compile(rf"(\d+)_.*\.{direction}\.sql")
        return {
            str(int(m.group(1))): p
            for p in self._directory().iterdir()
            if (m := pattern.fullmatch(p.name))
        }

    def _alembic_applied(self, current: list[str]) -> list[str]:
        if len(current) != 1:
            raise PlanningError(f"alembic_version holds {current or 'nothing'}; expected one head")
        chain = alembic_chain(self._alembic_history())
        if current[0] not in chain:
            raise PlanningError(f"revision {current[0]} is not in alembic history")
        return chain[chain.index(current[0]) :]

    def _alembic_step(self, found: Detected, revision: str) -> AlembicDowngrade:
        command = self.params.alembic_command
        if not command:
            raise PlanningError("Alembic is in use: set alembic_command to downgrade with it")
        return AlembicDowngrade(
            self.conn,
            found.table,
            list(command),
            self.params.alembic_directory,
            revision,
            self.params.restore_timeout,
        )

    def _alembic_history(self) -> str:
        run = run_alembic(
            self._alembic_step(Detected("alembic", "alembic_version"), ""), ["history"], timeout=120
        )
        if run.returncode != 0:
            raise PlanningError(f"alembic history failed: {run.tail()}")
        return run.stdout

    def _directory(self) -> Path:
        if self.params.migrations is None:
            raise PlanningError(f"no migrations directory is configured for {self.conn.dbname}")
        return Path(self.params.migrations)

    def script(self, found: Detected, version: str) -> Path | None:
        """Return the down script the tool would use for `version`, or None when missing."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", version):
            raise PlanningError(f"migration version {version!r} is not a plain name")
        directory = self._directory()
        if found.tool in ("procedures", "supabase"):
            path = directory / f"rollback_{version}.sql"
            return path if path.is_file() else None
        if found.tool == "golang-migrate":
            return self._golang_files("down").get(version)
        undo = re.compile(r"U([0-9._]+)__.*\.sql")
        for path in sorted(directory.iterdir()):
            match = undo.fullmatch(path.name)
            if match and version_key(match.group(1).replace("_", ".")) == version_key(version):
                return path
        return None

    def rollback(self, target: str) -> MigrationRollback:
        """Plan the rollback to `target` (the version that stays applied)."""
        found = self.detect()
        applied = self.applied(found)
        if target not in applied:
            raise PlanningError(f"{target} is not an applied migration of {self.conn.dbname}")
        newer = applied[: applied.index(target)]
        if not newer:
            raise PlanningError(
                f"no applied migration of {self.conn.dbname} is newer than {target}"
            )
        note = f"Migration tool: {found.label}"
        if found.tool == "alembic":
            return MigrationRollback(
                [self._alembic_step(found, target)],
                [note, f"Alembic downgrades {', '.join(newer)} to {target}"],
            )
        scripts = {v: self.script(found, v) for v in newer}
        missing = [v for v, path in scripts.items() if path is None]
        if missing:
            raise PlanningError(
                f"no down script for migration(s) {', '.join(missing)} in {self._directory()} "
                f"({found.label}); nothing was run. A rollback that only deleted bookkeeping "
                "rows would leave their schema changes in place, so it is not offered"
            )
        steps = [self._step(found, v, scripts[v], applied) for v in newer]
        return MigrationRollback(
            steps,
            [note, *(f"roll back {v} with {scripts[v].name}" for v in newer)],  # type: ignore[union-attr]
        )

    def _step(
        self,
        found: Detected,
        version: str,
        script: Path | None,
        applied: list[str],
    ) -> Action:
        assert script is not None
        timeout = self.params.restore_timeout
        if found.tool == "golang-migrate":
            below = applied[applied.index(version) + 1 :]
            previous = int(below[0]) if below else None
            return GolangMigrateDown(
                self.conn, found.table, int(version), previous, script, timeout
            )
        if found.tool == "flyway":
            return FlywayUndo(self.conn, found.table, version, script, timeout)
        return RollbackMigration(self.conn, found.table, version, script, timeout)
