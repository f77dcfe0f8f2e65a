"""Rebuilding a database target's approved steps on resume, from their stored specs.

Nothing live is read (the resume contract in actions.base); every stored path and name is
checked again against the configured directories and databases, so a spec edited in the
bot's database cannot point a step elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actions.base import Action, PlanningError
from actions.database.aurora import AuroraRestoreToTime, AuroraSwap
from actions.database.drills import DropScratch, scratch_names
from actions.database.migration_steps import (
    AlembicDowngrade,
    FlywayUndo,
    GolangMigrateDown,
    RollbackMigration,
)
from actions.database.names import parse_time
from actions.database.params import RdsInstance
from actions.database.pgtools import on_database
from actions.database.pitr import RestoreToTime
from actions.database.rds import RdsRestoreToTime, RdsSwap
from actions.database.selfhosted import RestoreIntoRecovery, SwapDatabases
from actions.database.verification import VerifyDatabase

if TYPE_CHECKING:
    from actions.database.target import DatabaseTarget


def restore_step(target: DatabaseTarget, name: str, spec: dict[str, Any]) -> Action:
    """Rebuild the approved step `name` from its stored spec, without reading the live
    system (the resume contract in actions.base); paths must still lie in the configured
    directories."""
    builders: dict[str, Callable[[dict[str, Any]], Action]] = {
        "database.pre_rollback_backup": lambda s: target.pre_rollback(aside=bool(s.get("aside"))),
        "database.restore_into_recovery": lambda s: _restore_recovery(target, s),
        "database.verify": lambda s: _restore_verify(target, s),
        "database.swap": lambda s: SwapDatabases(
            target.params.connection,
            _recovery_name(target, s["recovery"]),
            target.params.swap_timeout,
            target.now,
            source=str(s["source"]),
        ),
        "database.pitr_restore": lambda s: _restore_pitr(target, s),
        "database.drop_scratch": lambda s: DropScratch(
            target.params.connection, _recovery_name(target, s["scratch"], drill=True)
        ),
        "database.migration_rollback": lambda s: _scripted(target, RollbackMigration, s),
        "database.golang_migrate_down": lambda s: GolangMigrateDown(
            target.params.connection,
            str(s["table"]),
            int(s["version"]),
            None if s["previous"] is None else int(s["previous"]),
            _script(target, s["script"]),
            target.params.restore_timeout,
        ),
        "database.flyway_undo": lambda s: _scripted(target, FlywayUndo, s),
        "database.alembic_downgrade": lambda s: _restore_alembic(target, s),
        "database.rds_restore": lambda s: RdsRestoreToTime(
            _rds(target),
            str(s["restored_id"]),
            parse_time(s["restore_time"]),
            target.params.restore_timeout,
        ),
        "database.rds_swap": lambda s: RdsSwap(
            _rds(target), str(s["restored_id"]), target.params.restore_timeout, target.now
        ),
        "database.aurora_restore": lambda s: AuroraRestoreToTime(
            _rds(target),
            str(s["restored_cluster"]),
            str(s["restored_writer"]),
            parse_time(s["restore_time"]),
            target.params.restore_timeout,
        ),
        "database.aurora_swap": lambda s: AuroraSwap(
            _rds(target), str(s["restored_cluster"]), target.params.restore_timeout, target.now
        ),
    }
    if name not in builders:
        raise PlanningError(f"database target {target.dbname} has no step called {name!r}")
    try:
        return builders[name](spec)
    except (KeyError, TypeError, ValueError) as error:
        raise PlanningError(f"stored spec of {name} is not usable: {error!r}") from error


def _recovery_name(target: DatabaseTarget, name: object, *, drill: bool = False) -> str:
    """The recovery database's name; with `drill`, a drill's scratch database's too."""
    allowed = (f"{target.dbname}_recovery", *(scratch_names(target.dbname) if drill else ()))
    if name not in allowed:
        raise PlanningError(f"{name!r} is not the recovery database of {target.dbname}")
    return str(name)


def _rds(target: DatabaseTarget) -> RdsInstance:
    if target.params.rds is None:
        raise PlanningError(f"{target.dbname} has no RDS instance configured")
    return target.params.rds


def _script(target: DatabaseTarget, path: object) -> Path:
    directory = Path(target.params.migrations or "/nonexistent").resolve()
    script = Path(str(path)).resolve()
    if directory not in script.parents:
        raise PlanningError(f"{path} is not in the migrations directory {directory}")
    return script


def _scripted(
    target: DatabaseTarget,
    step: type[RollbackMigration] | type[FlywayUndo],
    spec: dict[str, Any],
) -> Action:
    """A step that runs one script for one version, recorded in the migration table."""
    return step(
        target.params.connection,
        str(spec["table"]),
        str(spec["version"]),
        _script(target, spec["script"]),
        target.params.restore_timeout,
    )


def _restore_recovery(target: DatabaseTarget, spec: dict[str, Any]) -> Action:
    return RestoreIntoRecovery(
        target.params.connection,
        target.backup_path(str(spec["dump"])),
        _recovery_name(target, spec["recovery"], drill=True),
        int(spec["jobs"]),
        target.params.restore_timeout,
    )


def _restore_verify(target: DatabaseTarget, spec: dict[str, Any]) -> Action:
    database = str(spec["database"])
    conn = on_database(target.params.connection, database)
    if database in scratch_names(target.dbname):
        return VerifyDatabase(conn, target.queries)
    if database not in (target.dbname, f"{target.dbname}_recovery"):
        raise PlanningError(f"{database!r} is neither {target.dbname} nor its recovery database")
    instance = spec.get("instance_id")
    if instance is None and database != target.dbname:
        return VerifyDatabase(conn, target.queries, swapped_into=target.dbname)
    if instance is None:
        return VerifyDatabase(conn, target.queries)
    return VerifyDatabase(conn, target.queries, rds=_rds(target), instance_id=str(instance))


def _restore_pitr(target: DatabaseTarget, spec: dict[str, Any]) -> Action:
    source = target.params.archive or target.params.pgbackrest
    if source is None:
        raise PlanningError(f"{target.dbname} has no WAL archive or pgBackRest configured")
    base = str(spec["base"])
    if target.params.archive is not None:
        directory = Path(target.params.archive.base_backups).resolve()
        if directory not in Path(base).resolve().parents:
            raise PlanningError(f"{base} is not in the base backups directory {directory}")
    return RestoreToTime(
        target.params.connection,
        source,
        parse_time(spec["moment"]),
        bool(spec["inclusive"]),
        base,
        _recovery_name(target, spec["recovery"], drill=True),
        int(spec["jobs"]),
        target.queries,
        target.params.restore_timeout,
    )


def _restore_alembic(target: DatabaseTarget, spec: dict[str, Any]) -> Action:
    command = target.params.alembic_command
    if not command:
        raise PlanningError("alembic_command is no longer configured")
    return AlembicDowngrade(
        target.params.connection,
        str(spec["table"]),
        list(command),
        target.params.alembic_directory,
        str(spec["revision"]),
        target.params.restore_timeout,
        tuple(str(h) for h in spec.get("heads", ())),
    )
