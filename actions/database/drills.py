"""A restore drill of a database: does the newest backup restore, and how long does it take?

The drill reuses the rollback's own restore steps with another destination, so what is
rehearsed is exactly what an incident would run up to the swap:

- the newest dump goes into `<db>_drill` (`selfhosted.RestoreIntoRecovery`: created like
  the live database, pg_restore --exit-on-error), the verification queries run there;
- where the target has a WAL archive or pgBackRest, the cluster is recovered to just
  before the last archived commit in a scratch instance (`pitr.RestoreToTime`:
  verification there, then the database copied into `<db>_drill_pitr`), and the queries
  run again on the copy;
- each scratch database is dropped afterwards by an `always` step, so a failed restore
  leaves nothing behind either; the drop refuses a database the bot did not make (the
  scratch databases carry `selfhosted.RECOVERY_MARKER` as their comment, as every
  restore destination of the bot does).

Nothing here writes to the live database: the restore steps read its shape, owner and
extension versions, and every write goes to the scratch database or the scratch
instance. That is why a database drill is allowed in production. The dump is not read
back at planning time as a rollback's is: a backup that does not restore is what the
drill is there to find, so it fails the drill (and is recorded) instead of refusing it.

RDS and Aurora restores create billable instances and are not drilled here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql

from actions.base import Action, PermanentError, PlanningError, StepContext, StepResult
from actions.database.drill_names import chosen_refs, restored_words
from actions.database.names import (
    check_pg_name,
    human_size,
    iso,
    parse_time,
    pitr_ref,
)
from actions.database.params import DatabaseConnection
from actions.database.pgtools import (
    connect,
    database_comment,
    database_exists,
    inspect_archive,
    maintenance,
    on_database,
    step_errors,
)
from actions.database.pitr import RestoreToTime
from actions.database.selfhosted import RECOVERY_MARKER, Backup, RestoreIntoRecovery
from actions.database.verification import VerifyDatabase
from actions.database.wal_archive import choose_base

if TYPE_CHECKING:
    from actions.database.target import DatabaseTarget

DUMP_SUFFIX = "_drill"
PITR_SUFFIX = "_drill_pitr"


def scratch_names(dbname: str) -> tuple[str, str]:
    """The scratch databases of a drill of `dbname`: the dump's, the point in time's."""
    return f"{dbname}{DUMP_SUFFIX}", f"{dbname}{PITR_SUFFIX}"


@dataclass
class DropScratch:
    """Drop a drill's scratch database (ours only), whatever the drill's outcome."""

    conn: DatabaseConnection
    scratch: str
    timeout: float = 120.0
    name = "database.drop_scratch"
    idempotent = True

    def label(self) -> str:
        """The step's name for people."""
        return f"Drop the drill's scratch database {self.scratch}"

    def describe(self) -> str:
        """Say which database is dropped, and that it must be the bot's."""
        return (
            f"Drop database {self.scratch} on {self.conn.host}:{self.conn.port} WITH (FORCE) "
            f"if it exists and carries the bot's marker (refuse any other); "
            f"{self.conn.dbname} is not touched"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"scratch": self.scratch}

    def run(self, ctx: StepContext) -> StepResult:
        """Drop it; nothing to do when it is not there (the restore never created it)."""
        with (
            step_errors(f"dropping {self.scratch}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            if not database_exists(pg, self.scratch):
                return StepResult(summary=f"{self.scratch} does not exist", skipped=True)
            if database_comment(pg, self.scratch) != RECOVERY_MARKER:
                raise PermanentError(
                    f"database {self.scratch} was not made by the bot; it is not dropped"
                )
            pg.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.scratch))
            )
        return StepResult(summary=f"Dropped the scratch database {self.scratch}")


@dataclass(frozen=True)
class DrillPlan:
    """A database drill's steps by part, what it restores, and its point (to plan it again)."""

    dump: list[Action]
    pitr: list[Action]
    cleanup: list[Action]
    point: str
    """`backup:<path>` and/or `pitr:<time>`, joined by `;`: the same drill planned again."""
    restored: str
    """What the drill restores, in words: the dump's name, the time recovered to."""
    notes: list[str]


def drill_plan(target: DatabaseTarget, point: str | None = None) -> DrillPlan:
    """Plan a restore drill: the newest dump, and the end of the WAL archive, into scratch.

    `point` (a drill's own, from an earlier plan) keeps the dump and the time it chose: the
    archive's end moves with every commit, and the approval is for one exact plan.
    """
    params, db = target.params, target.dbname
    if params.rds is not None:
        raise PlanningError(
            f"{db} is restored from RDS: a restore drill would create a billable instance; "
            "drill it with the AWS console's restore, not here"
        )
    if db == params.connection.maintenance_dbname:
        raise PlanningError(f"cannot drill the maintenance database {db}")
    chosen = chosen_refs(point)
    dump_name, pitr_name = scratch_names(db)
    for name in (dump_name, pitr_name):
        check_pg_name(name)
    dump: list[Action] = []
    cleanup: list[Action] = []
    refs: list[str] = []
    notes: list[str] = []
    conn = params.connection
    newest = _newest(target, chosen.get("backup"))
    if newest is not None:
        info = inspect_archive(newest.path)
        jobs = max(1, params.restore_jobs) if info.readable and info.parallel else 1
        dump = [
            RestoreIntoRecovery(conn, newest.path, dump_name, jobs, params.restore_timeout),
            VerifyDatabase(on_database(conn, dump_name), target.queries),
        ]
        cleanup.append(DropScratch(conn, dump_name))
        refs.append(f"backup:{newest.path}")
        notes.append(
            f"Restores the newest backup {newest.path.name} ({human_size(newest.size)}, taken "
            f"{iso(newest.taken_at)}) into the scratch database {dump_name} and runs the "
            f"verification queries there; {target.estimate(newest.size).detail}"
        )
    pitr, moment = _pitr(target, pitr_name, chosen.get("pitr"))
    if moment is not None:
        cleanup.append(DropScratch(conn, pitr_name))
        refs.append(pitr_ref(moment))
        notes.append(
            f"Recovers {db} to {iso(moment)} (just before the last archived commit when "
            f"planned) from the "
            f"{target.pitr_source} in a scratch instance, copies it into {pitr_name} and runs "
            "the queries there"
        )
    if not refs:
        raise PlanningError(
            f"{db} has no backup to drill: no dump in {params.backups or 'a backups directory'} "
            "and no WAL archive or pgBackRest stanza configured"
        )
    notes.append(
        f"Nothing is written to {db}: the scratch databases are dropped afterwards, "
        "also when the drill fails"
    )
    point = ";".join(refs)
    return DrillPlan(dump, pitr, cleanup, point, restored_words(point), notes)


def _newest(target: DatabaseTarget, chosen: str | None) -> Backup | None:
    """The dump the drill restores: the one chosen before, else the newest regular one."""
    backups = target.backups()
    if chosen is not None:
        found = [b for b in backups if str(b.path) == str(Path(chosen).resolve())]
        if not found:
            raise PlanningError(f"the backup {chosen} the drill was planned with is gone")
        return found[0]
    regular = [b for b in backups if not b.pre_rollback] or backups
    return regular[0] if regular else None


def _pitr(
    target: DatabaseTarget, scratch: str, chosen: str | None
) -> tuple[list[Action], datetime | None]:
    """Recover to just before the archive's last commit (the WAL chain replayed), verify
    the copy."""
    params = target.params
    source = params.archive or params.pgbackrest
    if source is None:
        return [], None
    window = target.pitr_window()
    if window is None:
        raise PlanningError(f"the {target.pitr_source} has no restorable window to drill")
    # A time target stops only before a commit later than it (PostgreSQL 15
    # xlogrecovery.c, recoveryStopsBefore): the last archived commit itself is never
    # reached, and recovery would end with "recovery ended before configured recovery
    # target was reached". Just before it replays the whole archive but that commit.
    end = max(window[0], window[1] - timedelta(microseconds=1))
    moment = end if chosen is None else parse_time(chosen)
    if not window[0] <= moment <= window[1]:
        raise PlanningError(f"{iso(moment)} is no longer inside the {target.pitr_source}'s window")
    base = choose_base(params.archive, moment).ref if params.archive is not None else "pgbackrest"
    conn = params.connection
    restore = RestoreToTime(
        conn,
        source,
        moment,
        True,
        base,
        scratch,
        max(1, params.restore_jobs),
        target.queries,
        params.restore_timeout,
    )
    return [restore, VerifyDatabase(on_database(conn, scratch), target.queries)], moment
