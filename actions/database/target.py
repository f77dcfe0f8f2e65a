"""The database target: rollback points, pre-rollback checks and plans for one database.

- One `DatabaseTarget` per configured database turns a rollback point ref into a `TargetPlan`.
  Everything that can refuse a rollback (missing or unreadable dump, time outside the window,
  rollback script missing) refuses in `plan()`, before approval, never halfway through a run.
- Nothing a plan replaces is lost: a swap keeps the live database aside and dumps it once
  maintenance mode is off (the site is not down for the dump); a migration rollback, which
  changes the live database in place, dumps it first; for RDS nothing is destroyed, so its
  plans have none.
- Point in time is offered only where WAL can be replayed (continuous archiving,
  pgBackRest, RDS, Aurora), over the real window; where only dumps exist a time asked for
  plans the dump before it, named as such ("not a point-in-time recovery").
- The default point is just before the change being rolled back, never the window's end
  (points.py lists the points and chooses it).
- A user-typed backup path must lie inside the configured backups directory; on resume,
  `restore(name, spec)` (resume.py) checks stored paths against the configured directories too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from actions.base import Action, Check, Finding, PlanningError, RollbackPoint, TargetPlan
from actions.clock import utcnow
from actions.database.aurora import AuroraRestoreToTime, AuroraSwap, cluster_window, readers
from actions.database.evidence import database_evidence
from actions.database.migration_plans import MigrationPlanner
from actions.database.names import (
    check_pg_name,
    exact,
    human_duration,
    human_size,
    iso,
    parse_ref,
    parse_time,
    stamp,
)
from actions.database.params import DatabaseParams, Method, VerificationQuery
from actions.database.pgtools import (
    ArchiveInfo,
    connect,
    database_comment,
    database_exists,
    inspect_archive,
    maintenance,
    missing_roles,
    on_database,
    planning_errors,
    prepared_transactions,
)
from actions.database.pitr import RestoreToTime, describe_loss
from actions.database.points import default_ref, rollback_points
from actions.database.rds import (
    RDS_ID_MAX,
    RdsRestoreToTime,
    RdsSwap,
    describe_cluster,
    rds_client,
    rds_errors,
    rds_stamp,
    restorable_window,
)
from actions.database.resume import restore_step
from actions.database.selfhosted import (
    RECOVERY_MARKER,
    Backup,
    PreRollbackBackup,
    RestoreIntoRecovery,
    SwapDatabases,
    list_backups,
)
from actions.database.verification import DEFAULT_VERIFICATION, VerifyDatabase
from actions.database.wal_archive import archive_window, choose_base, pgbackrest_window


class DatabaseTarget:
    """One configured database: its rollback points, checks and plans."""

    def __init__(
        self,
        params: DatabaseParams,
        *,
        restore_rate: float | None = None,
        now: Callable[[], datetime] | None = None,
        healthy_at: datetime | None = None,
    ) -> None:
        self.params = params
        self.restore_rate = restore_rate
        self.now = now or utcnow
        self.healthy_at = healthy_at

    # -- listing

    @property
    def dbname(self) -> str:
        """The live database's name."""
        return self.params.connection.dbname

    @property
    def queries(self) -> tuple[VerificationQuery, ...]:
        """The verification queries: configured ones, else the procedures' defaults."""
        configured = self.params.verification
        return tuple(configured) if configured is not None else DEFAULT_VERIFICATION

    def backups(self) -> list[Backup]:
        """List the dumps of this database in the backups directory, newest first."""
        if self.params.backups is None:
            return []
        return list_backups(Path(self.params.backups), self.dbname)

    def pitr_window(self) -> tuple[datetime, datetime] | None:
        """Return the restorable window: RDS's own, the WAL archive's, pgBackRest's; None
        where only dumps exist."""
        rds = self.params.rds
        if rds is not None:
            with rds_errors(f"reading RDS instance {rds.instance_id}", planning=True):
                if rds.cluster_id is not None:
                    return cluster_window(rds_client(rds.aws), rds.cluster_id)
                return restorable_window(rds_client(rds.aws), rds.instance_id)
        if self.params.archive is not None:
            return archive_window(self.params.archive)
        if self.params.pgbackrest is not None:
            return pgbackrest_window(self.params.pgbackrest)
        return None

    @property
    def pitr_source(self) -> str | None:
        """Name where point-in-time recovery comes from, for labels and notes."""
        if self.params.rds is not None and self.params.rds.cluster_id is not None:
            return f"Aurora cluster {self.params.rds.cluster_id}"
        if self.params.rds is not None:
            return f"RDS {self.params.rds.instance_id}"
        if self.params.archive is not None:
            return f"WAL archive {self.params.archive.wal_archive}"
        if self.params.pgbackrest is not None:
            return f"pgBackRest stanza {self.params.pgbackrest.stanza}"
        return None

    def applied_migrations(self) -> list[str]:
        """Read the applied migration versions, newest first."""
        return MigrationPlanner(self.params).applied()

    def points(self) -> list[RollbackPoint]:
        """List the rollback points of every allowed method, each group newest first."""
        return rollback_points(self)

    # -- resolving refs

    def default_ref(self) -> str:
        """Return the default point of the first allowed method."""
        return default_ref(self)

    def _resolve(self, ref: str | None) -> tuple[Method, str]:
        method, value = parse_ref(ref or self.default_ref())
        if method not in self.params.methods:
            raise PlanningError(f"{method} rollback is not allowed for {self.dbname}")
        return method, value

    def backup_path(self, value: str) -> Path:
        if self.params.backups is None:
            raise PlanningError(f"no backups directory is configured for {self.dbname}")
        directory = Path(self.params.backups).resolve()
        path = Path(value)
        if not path.is_absolute() or directory not in path.resolve().parents:
            raise PlanningError(f"{value} is not a file in the backups directory {directory}")
        return path.resolve()

    def _readable(self, path: Path) -> ArchiveInfo:
        info = inspect_archive(path)
        if not info.readable:
            raise PlanningError(f"backup {path} cannot be used: {info.error}")
        roles = self._roles_check(info)
        if not roles.ok:
            raise PlanningError(f"backup {path} cannot be used: {roles.detail}")
        return info

    def _roles_check(self, info: ArchiveInfo) -> Check:
        """Check the roles the dump names as owners and grantees exist on the server."""
        conn = self.params.connection
        with planning_errors("reading the server's roles"), connect(maintenance(conn)) as pg:
            missing = missing_roles(pg, info.roles)
        if missing:
            return Check(
                "roles the dump needs exist",
                False,
                f"it names role(s) {', '.join(missing)} as owner or grantee, and "
                f"{conn.host}:{conn.port} has none of that name: pg_restore would stop there",
            )
        return Check("roles the dump needs exist", True, ", ".join(sorted(info.roles)) or "none")

    def _inside_window(self, moment: datetime) -> str:
        """Refuse a time outside the restorable window; describe where it falls."""
        window = self.pitr_window()
        if window is None:
            raise PlanningError(f"no point-in-time window for {self.dbname}")
        span = f"{iso(window[0])} to {iso(window[1])}"
        if not window[0] <= moment <= window[1]:
            raise PlanningError(f"{iso(moment)} is outside the restorable window {span}")
        return f"{iso(moment)} within {span}"

    # -- checks

    def checks(self, ref: str | None) -> list[Check]:
        """Run the machine-verifiable pre-rollback checks for `ref`."""
        try:
            method, value = self._resolve(ref)
            if method == "backup":
                return self._backup_checks(self.backup_path(value))
            if method == "pitr":
                moment = parse_time(value)
                if self.pitr_source is None:
                    return self._dump_checks(moment)
                return self._pitr_checks(moment)
            return self._migration_checks(value)
        except PlanningError as error:
            return [Check("rollback point", False, str(error))]

    def evidence(self, ref: str | None) -> list[Finding]:
        """The reversibility verdict's evidence: checks weighed, data lost, freshness."""
        return database_evidence(self, ref)

    def estimate(self, size: int) -> Check:
        """Estimate the restore time from the dump size and the measured restore rate."""
        if not self.restore_rate:
            return Check(
                "estimated duration",
                True,
                f"no earlier restore measured ({human_size(size)} to restore)",
            )
        seconds = size / self.restore_rate
        return Check(
            "estimated duration",
            True,
            f"about {human_duration(seconds)} for {human_size(size)} at "
            f"{human_size(self.restore_rate)}/s measured on earlier restores",
        )

    def _backup_checks(self, path: Path) -> list[Check]:
        info = inspect_archive(path)
        detail = (
            f"{path} · {info.format} format, {info.entries} entries, every block read"
            if info.readable
            else info.error
        )
        checks = [Check("backup reads back whole", info.readable, detail)]
        if not info.readable:
            return checks
        return [
            *checks,
            self.estimate(path.stat().st_size),
            self._recovery_check(),
            self._prepared_check(),
            self._roles_check(info),
        ]

    def _pitr_checks(self, moment: datetime) -> list[Check]:
        try:
            inside = Check("time inside restorable window", True, self._inside_window(moment))
        except PlanningError as error:
            return [Check("time inside restorable window", False, str(error))]
        if self.params.rds is not None:
            return [inside]
        loss = describe_loss(
            moment, inclusive=self.params.recovery_target_inclusive, db=self.dbname
        )
        return [
            inside,
            Check("data-loss window", True, loss),
            self._recovery_check(),
            self._prepared_check(),
        ]

    def _dump_checks(self, moment: datetime) -> list[Check]:
        earlier = [b for b in self.backups() if b.taken_at <= moment and not b.pre_rollback]
        if not earlier:
            return [Check("dump before the time", False, f"no dump at or before {iso(moment)}")]
        backup = earlier[0]
        gap = human_duration((moment - backup.taken_at).total_seconds())
        chosen = Check(
            "dump before the time (not point in time)",
            True,
            f"restore the dump of {iso(backup.taken_at)}, {gap} before the time you asked",
        )
        return [chosen, *self._backup_checks(backup.path)]

    def _prepared_check(self) -> Check:
        """A prepared transaction on the live database makes the swap's rename fail."""
        with (
            planning_errors("looking for prepared transactions"),
            connect(maintenance(self.params.connection)) as pg,
        ):
            found = prepared_transactions(pg, [self.dbname])
        if not found:
            return Check("no prepared transaction holds the database", True, self.dbname)
        return Check(
            "no prepared transaction holds the database",
            False,
            f"{'; '.join(found)}: the swap cannot rename {self.dbname} while it exists; a "
            "person must COMMIT PREPARED or ROLLBACK PREPARED it",
        )

    def _recovery_check(self) -> Check:
        recovery = f"{self.dbname}_recovery"
        with (
            planning_errors("looking for the recovery database"),
            connect(maintenance(self.params.connection)) as pg,
        ):
            if not database_exists(pg, recovery):
                return Check("recovery database name free", True, recovery)
            ours = database_comment(pg, recovery) == RECOVERY_MARKER
        detail = (
            f"{recovery} is left from an earlier run and will be replaced"
            if ours
            else f"{recovery} exists and was not made by the bot"
        )
        return Check("recovery database name free", ours, detail)

    def _migration_checks(self, target: str) -> list[Check]:
        try:
            rollback = MigrationPlanner(self.params).rollback(target)
        except PlanningError as error:
            return [Check("down scripts for every migration rolled back", False, str(error))]
        return [
            Check(f"step {i + 1}", True, step.describe()) for i, step in enumerate(rollback.steps)
        ]

    # -- plans

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Resolve `ref` into steps, or raise PlanningError before anything runs."""
        method, value = self._resolve(ref)
        if method == "backup":
            return self._backup_plan(self.backup_path(value))
        if method == "pitr":
            moment = parse_time(value)
            if self.params.rds is not None:
                return self._rds_plan(moment)
            if self.pitr_source is not None:
                return self._wal_plan(moment)
            return self._dump_before(moment)
        return self._migration_plan(value, force=force)

    def _verify_live(self) -> VerifyDatabase:
        return VerifyDatabase(self.params.connection, self.queries)

    def pre_rollback(self, *, aside: bool = False) -> PreRollbackBackup:
        if self.params.backups is None:
            raise PlanningError(
                f"no backups directory is configured for {self.dbname}: the pre-rollback "
                "backup needs one"
            )
        return PreRollbackBackup(
            self.params.connection,
            Path(self.params.backups),
            self.params.restore_timeout,
            self.now,
            aside=aside,
        )

    def _jobs(self, info: ArchiveInfo) -> int:
        return max(1, self.params.restore_jobs) if info.parallel else 1

    def _verify_recovery(self) -> VerifyDatabase:
        recovery = on_database(self.params.connection, f"{self.dbname}_recovery")
        return VerifyDatabase(recovery, self.queries, swapped_into=self.dbname)

    def _backup_plan(self, path: Path, notes: list[str] | None = None) -> TargetPlan:
        """Stage: restore into `<db>_recovery` and verify it there, before maintenance mode;
        then back up the live database and swap."""
        info = self._readable(path)
        size = path.stat().st_size
        if self.dbname == self.params.connection.maintenance_dbname:
            raise PlanningError(f"cannot swap the maintenance database {self.dbname}")
        recovery = f"{self.dbname}_recovery"
        check_pg_name(recovery)
        check_pg_name(f"{self.dbname}_pre_rollback_{stamp(self.now())}")
        if not self._recovery_check().ok:
            raise PlanningError(f"database {recovery} exists and was not made by the bot")
        conn = self.params.connection
        restore = RestoreIntoRecovery(
            conn, path, recovery, self._jobs(info), self.params.restore_timeout
        )
        swap = SwapDatabases(
            conn, recovery, self.params.swap_timeout, self.now, source=f"the dump {path.name}"
        )
        return TargetPlan(
            stage=[restore, self._verify_recovery()],
            rollback=[swap],
            verify=[self._verify_live()],
            keep=[self.pre_rollback(aside=True)],
            notes=[
                *(notes or []),
                f"Restores {path.name} ({human_size(size)}, read back whole) into "
                f"{self.dbname}_recovery and verifies it there before maintenance mode goes "
                f"on (a dump that does not restore whole stops the rollback there, nothing "
                f"live touched), then swaps it in; {self.estimate(size).detail}",
                f"The current {self.dbname} is kept as {self.dbname}_pre_rollback_<time of the "
                "swap>, and dumped to the backups directory after maintenance mode is off",
            ],
        )

    def _wal_plan(self, moment: datetime) -> TargetPlan:
        """Replay WAL to `moment` in a scratch instance, copy the database over, swap."""
        source = self.params.archive or self.params.pgbackrest
        assert source is not None
        self._inside_window(moment)
        if self.dbname == self.params.connection.maintenance_dbname:
            raise PlanningError(f"cannot swap the maintenance database {self.dbname}")
        recovery = f"{self.dbname}_recovery"
        check_pg_name(f"{self.dbname}_pre_rollback_{stamp(self.now())}")
        if not self._recovery_check().ok:
            raise PlanningError(f"database {recovery} exists and was not made by the bot")
        if self.params.archive is not None:
            base = choose_base(self.params.archive, moment)
            base_ref = base.ref
            base_note = f"base backup {base.ref} (usable from {iso(base.usable_from)})"
        else:
            base_ref = "pgbackrest"
            base_note = "the newest pgBackRest backup before the time (pgBackRest chooses)"
        inclusive = self.params.recovery_target_inclusive
        conn = self.params.connection
        restore = RestoreToTime(
            conn,
            source,
            moment,
            inclusive,
            base_ref,
            recovery,
            max(1, self.params.restore_jobs),
            self.queries,
            self.params.restore_timeout,
        )
        swap = SwapDatabases(
            conn,
            recovery,
            self.params.swap_timeout,
            self.now,
            source=f"{self.dbname} recovered to {exact(moment)} from the {self.pitr_source}",
        )
        keep: list[Action] = [self.pre_rollback(aside=True)] if self.params.backups else []
        return TargetPlan(
            stage=[restore, self._verify_recovery()],
            rollback=[swap],
            verify=[self._verify_live()],
            keep=keep,
            notes=[
                f"Point-in-time recovery to {exact(moment)} "
                f"({'inclusive' if inclusive else 'exclusive'}) from the {self.pitr_source}, "
                f"{base_note}, into {recovery}, verified there before maintenance mode goes on",
                describe_loss(moment, inclusive=inclusive, db=self.dbname),
            ],
        )

    def _dump_before(self, moment: datetime) -> TargetPlan:
        """Only dumps exist: say plainly that this restores the dump before the time asked."""
        earlier = [b for b in self.backups() if b.taken_at <= moment and not b.pre_rollback]
        if not earlier:
            raise PlanningError(f"no dump of {self.dbname} was taken at or before {iso(moment)}")
        backup = earlier[0]
        gap = human_duration((moment - backup.taken_at).total_seconds())
        return self._backup_plan(
            backup.path,
            [
                f"Not a point-in-time recovery: restore the dump of {iso(backup.taken_at)}, "
                f"{gap} before the time you asked ({iso(moment)}); changes after "
                f"{iso(backup.taken_at)} are not in the restored database"
            ],
        )

    def _aurora_plan(self, moment: datetime) -> TargetPlan:
        rds = self.params.rds
        assert rds is not None and rds.cluster_id is not None
        self._inside_window(moment)
        cluster = f"{rds.cluster_id}-pitr-{rds_stamp(moment)}"
        writer = f"{rds.instance_id}-pitr-{rds_stamp(moment)}"
        with rds_errors(f"reading Aurora cluster {rds.cluster_id}", planning=True):
            live = describe_cluster(rds_client(rds.aws), rds.cluster_id) or {}
        names = [f"{r}-pitr-{rds_stamp(moment)}" for r in readers(live, rds.instance_id)]
        longest = max(f"{rds.cluster_id}-pre-rollback-{rds_stamp(moment)}", writer, *names, key=len)
        if len(longest) > RDS_ID_MAX:
            raise PlanningError(f"RDS identifier {longest} would be longer than {RDS_ID_MAX}")
        timeout = self.params.restore_timeout
        rollback: list[Action] = [AuroraRestoreToTime(rds, cluster, writer, moment, timeout)]
        if rds.verify:
            rollback.append(
                VerifyDatabase(self.params.connection, self.queries, rds=rds, instance_id=writer)
            )
        rollback.append(AuroraSwap(rds, cluster, timeout, self.now))
        return TargetPlan(
            rollback=rollback,
            notes=[
                f"Aurora cluster {rds.cluster_id} restored to {iso(moment)} as {cluster}, "
                f"writer {writer}, readers {', '.join(names) or 'none'}; changes after "
                f"{iso(moment)} are not in it",
                f"The current cluster is kept, renamed {rds.cluster_id}-pre-rollback-<time>",
            ],
        )

    def _rds_plan(self, moment: datetime) -> TargetPlan:
        rds = self.params.rds
        assert rds is not None
        if rds.cluster_id is not None:
            return self._aurora_plan(moment)
        self._inside_window(moment)
        restored = f"{rds.instance_id}-pitr-{rds_stamp(moment)}"
        if len(f"{rds.instance_id}-pre-rollback-{rds_stamp(moment)}") > RDS_ID_MAX:
            raise PlanningError(f"RDS identifiers derived from {rds.instance_id} would be too long")
        timeout = self.params.restore_timeout
        verify_restored = VerifyDatabase(
            self.params.connection, self.queries, rds=rds, instance_id=restored
        )
        verify_live = VerifyDatabase(
            self.params.connection, self.queries, rds=rds, instance_id=rds.instance_id
        )
        rollback: list[Action] = [RdsRestoreToTime(rds, restored, moment, timeout)]
        rollback += [verify_restored] if rds.verify else []
        rollback.append(RdsSwap(rds, restored, timeout, self.now))
        return TargetPlan(
            rollback=rollback,
            verify=[verify_live] if rds.verify else [],
            notes=[
                f"RDS {rds.instance_id} restored to {iso(moment)} as {restored}; changes after "
                f"{iso(moment)} are not in it",
                f"The current instance is kept, renamed {rds.instance_id}-pre-rollback-<time>",
                "verification queries: " + ("on" if rds.verify else "off (RdsInstance.verify)"),
            ],
        )

    def _migration_plan(self, target: str, *, force: bool) -> TargetPlan:
        """Roll back with the detected tool's down scripts; `force` changes nothing here."""
        rollback = MigrationPlanner(self.params).rollback(target)
        notes = rollback.notes
        if force:
            notes = [*notes, "force has no effect on a migration rollback"]
        return TargetPlan(
            prepare=[self.pre_rollback()],
            rollback=rollback.steps,
            verify=[self._verify_live()],
            notes=notes,
        )

    # -- resume

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild the approved step `name` from its stored spec, without reading the live
        system (the resume contract in actions.base); paths must still lie in the configured
        directories."""
        return restore_step(self, name, spec)
