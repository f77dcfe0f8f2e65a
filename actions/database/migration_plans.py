"""Planning a migration rollback: the detected tool's versions, scripts and steps.

Everything that can refuse (unknown table, dirty or failed bookkeeping, a missing down
script, a target that is not applied, a statement that cannot run where the tool runs it)
refuses here, at plan time, before anything runs. What the rollback can do but not undo if
it fails half-way (a script outside any transaction, an empty down script) is returned as a
risk, which the reversibility verdict shows before approval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from actions.base import Action, PlanningError
from actions.database.alembic_graph import AlembicGraph
from actions.database.migration_steps import (
    AlembicDowngrade,
    FlywayUndo,
    GolangMigrateDown,
    RollbackMigration,
    run_alembic,
)
from actions.database.migrations import (
    Detected,
    FlywayRow,
    alembic_current,
    applied_simple,
    detect,
    flyway_applied,
    flyway_history,
    golang_state,
    version_key,
)
from actions.database.params import DatabaseParams
from actions.database.pgtools import connect, planning_errors
from actions.database.sqltext import controls_transaction, outside_transaction, statements


@dataclass(frozen=True)
class MigrationRollback:
    """The steps of a migration rollback and what the plan says about them."""

    steps: list[Action]
    notes: list[str]
    risks: list[str] = field(default_factory=list)
    """What a person must know before approving: each one makes the verdict risky."""


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
        """Return the applied versions (revisions), last applied first."""
        found = found or self.detect()
        if found.tool == "flyway":
            return [str(r.version) for r in self._flyway(found)]
        if found.tool == "alembic":
            return self._alembic_graph().applied(self._alembic_current(found))
        with (
            planning_errors(f"reading {found.table} of {self.conn.dbname}"),
            connect(self.conn) as pg,
        ):
            if found.tool in ("procedures", "supabase"):
                return applied_simple(pg, found.table)
            state = golang_state(pg, found.table)
        return self._golang_applied(state, found.table)

    def points(self, found: Detected) -> list[tuple[str, int]]:
        """Each applied version, last applied first, with how many migrations rolling back to
        it undoes (on an Alembic graph, only those above it on its own branches)."""
        if found.tool != "alembic":
            return [(v, i) for i, v in enumerate(self.applied(found))]
        current = self._alembic_current(found)
        graph = self._alembic_graph()
        return [(v, len(graph.downgrade(current, v)[0])) for v in graph.applied(current)]

    def _flyway(self, found: Detected) -> list[FlywayRow]:
        with (
            planning_errors(f"reading {found.table} of {self.conn.dbname}"),
            connect(self.conn) as pg,
        ):
            history = flyway_history(pg, found.table)
        return flyway_applied(history, found.table)

    def _alembic_current(self, found: Detected) -> list[str]:
        with (
            planning_errors(f"reading {found.table} of {self.conn.dbname}"),
            connect(self.conn) as pg,
        ):
            return alembic_current(pg, found.table)

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

    def _alembic_step(self, found: Detected, revision: str, heads: list[str]) -> AlembicDowngrade:
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
            tuple(heads),
        )

    def _alembic_graph(self) -> AlembicGraph:
        step = self._alembic_step(Detected("alembic", "alembic_version"), "", [])
        run = run_alembic(step, ["history"], timeout=120)
        if run.returncode != 0:
            raise PlanningError(f"alembic history failed: {run.tail()}")
        return AlembicGraph.parse(run.stdout)

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
        if found.tool == "alembic":
            return self._alembic_rollback(found, target)
        applied = self.applied(found)
        if target not in applied:
            raise PlanningError(f"{target} is not an applied migration of {self.conn.dbname}")
        newer = applied[: applied.index(target)]
        if not newer:
            raise PlanningError(
                f"no applied migration of {self.conn.dbname} is newer than {target}"
            )
        if found.tool == "flyway":
            self._refuse_baseline(found, newer)
        scripts = {v: self.script(found, v) for v in newer}
        missing = [v for v, path in scripts.items() if path is None]
        if missing:
            raise PlanningError(
                f"no down script for migration(s) {', '.join(missing)} in {self._directory()} "
                f"({found.label}); nothing was run. A rollback that only deleted bookkeeping "
                "rows would leave their schema changes in place, so it is not offered"
            )
        with (
            planning_errors(f"reading the server version of {self.conn.host}"),
            connect(self.conn) as pg,
        ):
            server = pg.info.server_version
        steps, notes, risks = [], [f"Migration tool: {found.label}"], []
        for version in newer:
            path = scripts[version]
            assert path is not None
            steps.append(self._step(found, version, path, applied))
            notes.append(f"roll back {version} with {path.name}")
            risks += self._risks(found, version, path, server, applied)
        return MigrationRollback(steps, [*notes, *(f"risk: {r}" for r in risks)], risks)

    def _refuse_baseline(self, found: Detected, newer: list[str]) -> None:
        """A BASELINE row marks where Flyway's history starts; no script stands behind it, so
        it has no undo (CoreMigrationType.BASELINE is synthetic: "only ever present in the
        schema history table, but never discovered by migration resolvers")."""
        kinds = {r.version: r.kind for r in self._flyway(found)}
        baseline = [v for v in newer if kinds.get(v) == "BASELINE"]
        if baseline:
            raise PlanningError(
                f"version {baseline[0]} is Flyway's baseline in {found.table}: the schema below it "
                "was never migrated by Flyway and has no undo; pick a version after it"
            )

    def _alembic_rollback(self, found: Detected, target: str) -> MigrationRollback:
        current = self._alembic_current(found)
        graph = self._alembic_graph()
        if target not in graph.applied(current):
            raise PlanningError(f"{target} is not an applied migration of {self.conn.dbname}")
        dropped, heads = graph.downgrade(current, target)
        if not dropped:
            raise PlanningError(
                f"no applied migration of {self.conn.dbname} is newer than {target}"
            )
        notes = [
            f"Migration tool: {found.label}",
            f"Alembic downgrades {', '.join(dropped)} to {target}",
        ]
        if heads != [target]:
            notes.append(
                f"{found.table} then holds {', '.join(heads)} (Alembic keeps the other "
                "branches of a merge or of several heads)"
            )
        return MigrationRollback([self._alembic_step(found, target, heads)], notes)

    def _risks(
        self, found: Detected, version: str, path: Path, server: int, applied: list[str]
    ) -> list[str]:
        """Refuse a script that cannot run where the tool runs it; name what is risky."""
        text = path.read_text()
        parts = statements(text)
        outside = outside_transaction(text, server_version=server)
        if not parts:
            return [
                f"{path.name} is empty: rolling back {version} changes only {found.table}; "
                f"what migration {version} changed stays"
            ]
        if found.tool == "golang-migrate":
            return self._golang_risks(
                found, path, parts=parts, outside=outside, applied=applied, version=version
            )
        if found.tool == "flyway":
            if outside and len(outside) < len(parts):
                raise PlanningError(
                    f"{path.name} mixes {outside[0]} (which PostgreSQL refuses in a transaction) "
                    "with statements that need one: Flyway refuses such a migration unless "
                    "mixed=true (ParserSqlScript), and the bot does not run a script part in, "
                    "part out of a transaction. Split the undo script"
                )
            if outside:
                return [
                    f"{path.name} runs statement by statement outside a transaction, as Flyway "
                    "runs it: if one fails, those before it stay, a failed UNDO_SQL row is "
                    "recorded and a person runs flyway repair"
                ]
            return []
        if outside:
            raise PlanningError(
                f"{path.name} holds {outside[0]}, which PostgreSQL refuses inside the "
                f"transaction that runs the script and removes {version} from {found.table} "
                "together; run it by hand or move it to a migration of its own"
            )
        if controls_transaction(text):
            return [
                f"{path.name} ends transactions itself (BEGIN/COMMIT): once it commits, a "
                f"failure leaves its work done and {version} still recorded in {found.table}"
            ]
        return []

    def _golang_risks(
        self,
        found: Detected,
        path: Path,
        *,
        parts: list[str],
        outside: list[str],
        applied: list[str],
        version: str,
    ) -> list[str]:
        if outside and len(parts) > 1:
            raise PlanningError(
                f"{path.name} holds {outside[0]} among {len(parts)} statements: golang-migrate "
                "sends a file as one Exec, which PostgreSQL runs as one transaction, where that "
                "statement cannot run (golang-migrate database/postgres/README.md, "
                "Multi-statement mode), so migrate down fails on it too. Put it in a down file "
                "of its own"
            )
        if outside:
            below = applied[applied.index(version) + 1 :]
            previous = below[0] if below else "the nil version"
            return [
                f"{path.name} runs outside any transaction ({outside[0]}): if it fails part-way, "
                f"{found.table} stays dirty at {previous}, as golang-migrate leaves it, and a "
                "person checks the schema and runs migrate force"
            ]
        return []

    def _step(self, found: Detected, version: str, script: Path, applied: list[str]) -> Action:
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
