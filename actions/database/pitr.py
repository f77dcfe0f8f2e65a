"""Self-hosted point-in-time recovery: WAL replay in a scratch instance, then a copy and a swap.

- Real PITR replays WAL: a base backup is restored into a scratch data directory of its own
  (PostgreSQL's continuous archiving: a `pg_basebackup` copy plus `restore_command`
  fetching segments from the WAL archive; or pgBackRest: `pgbackrest restore --type=time`),
  started with `pg_ctl` on its own port and Unix socket (no TCP listener, a trust-only
  `hba_file` of its own) with `recovery_target_time`, `recovery_target_inclusive` and
  `recovery_target_action = 'promote'`. The step waits for the promotion, quotes the
  server's own "recovery stopping ..." line, runs the verification queries there, creates
  `<db>_recovery` on the live server like the live database and copies the one database into
  it (pg_dump of the scratch instance, pg_restore --exit-on-error), then stops the scratch
  instance (`pg_ctl stop -m immediate`) and removes it. The live server is untouched until
  the swap (`selfhosted.SwapDatabases`).
- The window offered is the real one (wal_archive.py); the scratch instance and the OS user
  its commands run as are in scratch.py.
- Resume: the scratch directory is recorded in `ctx.memory` before anything is copied;
  a re-run stops and removes a leftover one, and a finished restore (recorded by the
  recovery database's oid) is not done twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from actions.base import PermanentError, StepContext, StepResult
from actions.database.names import exact
from actions.database.params import (
    DatabaseConnection,
    PgBackRest,
    VerificationQuery,
    WalArchive,
)
from actions.database.pgtools import (
    conn_args,
    on_database,
    pg_restore,
    run_tool,
    step_errors,
)
from actions.database.scratch import ScratchInstance, remove_leftover
from actions.database.selfhosted import (
    create_recovery,
    mark_restored,
    restore_result,
    restored_already,
)
from actions.database.verification import run_verification
from actions.database.wal_archive import pgbackrest_args

SCRATCH_KEY = "database.pitr_scratch:{}"


# -- the step


@dataclass
class RestoreToTime:
    """Recover the cluster to a time in a scratch instance, verify, copy the database over."""

    conn: DatabaseConnection
    source: WalArchive | PgBackRest
    moment: datetime
    inclusive: bool
    base: str
    recovery: str
    jobs: int
    queries: tuple[VerificationQuery, ...]
    timeout: float
    name = "database.pitr_restore"
    idempotent = True

    def label(self) -> str:
        """The step's name for people."""
        return (
            f"Recover {self.conn.dbname} to {exact(self.moment)} into a new database "
            f"({self.recovery})"
        )

    def describe(self) -> str:
        """Say what is replayed to when, where, and what is copied into which database."""
        db = self.conn.dbname
        kept = "kept" if self.inclusive else "left out"
        return (
            f"Recover the cluster to {exact(self.moment)} (recovery_target_inclusive = "
            f"{'on' if self.inclusive else 'off'}: a transaction committed at exactly that time "
            f"is {kept}) in a scratch instance of its own (directory under "
            f"{self.source.directory or 'the temp directory'}, own port and socket, pg_ctl): "
            f"{self._how()}; check it stopped at the target and run the verification queries "
            f"there; create {self.recovery} like {db} and copy {db} into it (pg_dump | "
            f"pg_restore --exit-on-error); stop and remove the scratch instance. "
            f"{db} is not touched"
        )

    def _how(self) -> str:
        if isinstance(self.source, PgBackRest):
            return (
                f"pgbackrest --stanza={self.source.stanza} restore --type=time "
                f"--target='{exact(self.moment)}' --target-action=promote "
                "--tablespace-map-all=<scratch>/tablespaces"
                f"{'' if self.inclusive else ' --target-exclusive'}"
            )
        return (
            f"copy base backup {self.base} (and its tablespaces, into the scratch directory) "
            f"and replay WAL from {self.source.wal_archive} "
            "(restore_command cp)"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {
            "moment": self.moment.isoformat(),
            "inclusive": self.inclusive,
            "base": self.base,
            "recovery": self.recovery,
            "jobs": self.jobs,
        }

    def run(self, ctx: StepContext) -> StepResult:
        """Skip when done; else recover in scratch, verify there, copy, clean up."""
        done = restored_already(
            self.conn, ctx, recovery=self.recovery, doing=f"looking for {self.recovery}"
        )
        if done is not None:
            return done
        key = SCRATCH_KEY.format(self.recovery)
        if ctx.memory.get(key):
            remove_leftover(self.source, Path(ctx.memory[key]))
        instance = ScratchInstance.create(self.source)
        ctx.memory[key] = str(instance.root)
        try:
            return self._recover(ctx, instance)
        finally:
            instance.remove()
            ctx.memory[key] = None

    def _recover(self, ctx: StepContext, instance: ScratchInstance) -> StepResult:
        started = time.monotonic()
        ctx.emit(f"restoring into scratch instance {instance.root} (port {instance.port})")
        self._restore_files(instance, ctx)
        stopped = instance.start(user=self.conn.user, deadline=time.monotonic() + ctx.remaining())
        ctx.emit(f"scratch instance promoted: {stopped}")
        scratch = instance.connection(self.conn)
        with step_errors(f"verifying {self.conn.dbname} in the scratch instance"):
            table, failures = run_verification(scratch, self.queries, timeout=60.0)
        if failures:
            raise PermanentError(
                f"verification failed in the scratch instance at {exact(self.moment)}: "
                + "; ".join(failures)
                + f"\n{table}\n{self.conn.dbname} was not touched"
            )
        with step_errors(f"creating {self.recovery}"):
            create_recovery(self.conn, self.recovery, timeout=ctx.remaining())
        copy = instance.root / "copy.dump"
        run = run_tool(
            ["pg_dump", "--no-password", *conn_args(scratch), "--format=custom", f"--file={copy}"],
            conn=None,
            timeout=ctx.remaining(),
        )
        if run.returncode != 0:
            raise PermanentError(f"pg_dump from the scratch instance failed:\n{run.tail()}")
        restored = pg_restore(
            copy,
            conn=on_database(self.conn, self.recovery),
            jobs=self.jobs,
            timeout=ctx.remaining(),
        )
        with step_errors(f"recording the restore into {self.recovery}"):
            mark_restored(self.conn, self.recovery, ctx.memory)
        result = restore_result(restored, dump=copy, dbname=self.recovery)
        return StepResult(
            summary=f"Recovered {self.conn.dbname} to {exact(self.moment)} "
            f"({'inclusive' if self.inclusive else 'exclusive'}) in "
            f"{time.monotonic() - started:.1f} s and copied it into {self.recovery}; "
            f"server: {stopped}",
            output=f"verification in the scratch instance:\n{table}\n{result.output}",
            data={**result.data, "stopped": stopped, "moment": self.moment.isoformat()},
        )

    def _restore_files(self, instance: ScratchInstance, ctx: StepContext) -> None:
        if isinstance(self.source, PgBackRest):
            instance.data.mkdir(mode=0o700)
            ScratchInstance.give(self.source, instance.root)
            argv = [
                *pgbackrest_args(self.source),
                f"--pg1-path={instance.data}",
                # pgBackRest restores tablespaces to their original places unless told
                # (`pgbackrest help restore tablespace-map-all`): those are the live server's.
                f"--tablespace-map-all={instance.tablespaces}",
                "--type=time",
                f"--target={exact(self.moment)}",
                "--target-action=promote",
                *([] if self.inclusive else ["--target-exclusive"]),
                "restore",
            ]
            run = instance.run(argv, timeout=ctx.remaining())
            if run.returncode != 0:
                raise PermanentError(f"pgbackrest restore failed:\n{run.tail() or run.stdout}")
            instance.configure(self.moment, inclusive=self.inclusive, restore_command=None)
            return
        base = Path(self.base)
        if not (base / "backup_label").is_file():
            raise PermanentError(f"base backup {base} is gone; {self.conn.dbname} was not touched")
        run = instance.run(["cp", "-a", str(base), str(instance.data)], timeout=ctx.remaining())
        if run.returncode != 0:
            raise PermanentError(f"copying base backup {base} failed:\n{run.tail()}")
        for line in instance.relocate_tablespaces(timeout=ctx.remaining()):
            ctx.emit(line)
        wal = Path(self.source.wal_archive)
        instance.configure(
            self.moment, inclusive=self.inclusive, restore_command=f'cp "{wal}/%f" "%p"'
        )


def describe_loss(moment: datetime, *, inclusive: bool, db: str) -> str:
    """Say exactly which changes the restored database will not have."""
    edge = "after" if inclusive else "at or after"
    return (
        f"Changes committed {edge} {exact(moment)} are not in the restored database; the "
        f"current {db} is kept as {db}_pre_rollback_<time of the swap>"
    )
