"""Database rollback: point-in-time recovery, backup restoration, migration rollback, verification.

Design reasoning common to the package (each module's docstring has the part
that concerns it):

- `describe()` feeds the approval hash, so it names only what is known at plan time (database,
  file, time, versions) and never the wall clock: names stamped with the time of a step
  (`pre_rollback_<db>_<ts>.dump`, `<db>_pre_rollback_<ts>`) are chosen when the step runs and
  kept in `ctx.memory`, so a resumed step reuses them instead of making new ones.

- Nothing live is touched before a restore is proven: every restore goes into a new
  `<db>_recovery`, whole, errors fatal, is verified there, and only then swapped in with
  everything of the live database but its data (`properties`).

Modules: `params` (the config models), `names` (stamps, sizes, times, refs),
`pgtools` (connections, pg_dump / pg_restore, whole-archive checks, sessions),
`properties` (database-level state carried across a swap), `selfhosted` (backups on
disk, pre-rollback backup, restore into the recovery database, swap), `pitr` (WAL replay
in a scratch instance: continuous archiving, pgBackRest), `wal_archive` (what an archive
holds and the window it can recover to), `scratch` (the scratch instance), `drills`
(restore drills into scratch databases), `migrations` and `migration_plans` (the migration
tool found in the database), `migration_steps` (the steps that undo migrations),
`verification`, `rds` (Amazon RDS PITR), `aurora` (Aurora clusters), `target`
(DatabaseTarget: checks and plans), `points` (its rollback points and the default one),
`resume` (its steps rebuilt from their specs), `evidence` (the verdict's evidence).

Only the light `params` module is imported with the package; every other name
is imported where it is first used (`actions.exports.lazy`), so reading the
config file imports no client (issue 16, point 6).
"""

from typing import TYPE_CHECKING

from actions.database.params import (
    DatabaseConnection,
    DatabaseParams,
    RdsInstance,
    VerificationQuery,
)
from actions.exports import lazy

if TYPE_CHECKING:
    from actions.database.drill_names import backup_set, restored_words
    from actions.database.drills import DrillPlan, DropScratch, drill_plan, scratch_names
    from actions.database.migration_steps import RollbackMigration
    from actions.database.names import human_size, iso, pitr_ref, stamp
    from actions.database.pgtools import inspect_archive
    from actions.database.rds import RdsRestoreToTime, RdsSwap, rds_stamp
    from actions.database.selfhosted import (
        RECOVERY_MARKER,
        PreRollbackBackup,
        RestoreIntoRecovery,
        SwapDatabases,
        list_backups,
    )
    from actions.database.target import DatabaseTarget
    from actions.database.verification import DEFAULT_VERIFICATION, VerifyDatabase, render_table

__getattr__ = lazy(
    __name__,
    {
        "DrillPlan": "drills",
        "DropScratch": "drills",
        "drill_plan": "drills",
        "backup_set": "drill_names",
        "scratch_names": "drills",
        "restored_words": "drill_names",
        "RollbackMigration": "migration_steps",
        "human_size": "names",
        "iso": "names",
        "pitr_ref": "names",
        "stamp": "names",
        "inspect_archive": "pgtools",
        "RdsRestoreToTime": "rds",
        "RdsSwap": "rds",
        "rds_stamp": "rds",
        "RECOVERY_MARKER": "selfhosted",
        "PreRollbackBackup": "selfhosted",
        "RestoreIntoRecovery": "selfhosted",
        "SwapDatabases": "selfhosted",
        "list_backups": "selfhosted",
        "DatabaseTarget": "target",
        "DEFAULT_VERIFICATION": "verification",
        "VerifyDatabase": "verification",
        "render_table": "verification",
    },
)

__all__ = [
    "DEFAULT_VERIFICATION",
    "RECOVERY_MARKER",
    "DatabaseConnection",
    "DatabaseParams",
    "DatabaseTarget",
    "DrillPlan",
    "DropScratch",
    "PreRollbackBackup",
    "RdsInstance",
    "RdsRestoreToTime",
    "RdsSwap",
    "RestoreIntoRecovery",
    "RollbackMigration",
    "SwapDatabases",
    "VerificationQuery",
    "VerifyDatabase",
    "backup_set",
    "drill_plan",
    "human_size",
    "inspect_archive",
    "iso",
    "list_backups",
    "pitr_ref",
    "rds_stamp",
    "render_table",
    "restored_words",
    "scratch_names",
    "stamp",
]
