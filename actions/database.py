"""Database rollback: point-in-time recovery, backup restoration, migration rollback, verification.

Design reasoning:

- One `DatabaseTarget` per configured database turns a rollback point ref into a `TargetPlan`.
  Refs carry their method as a prefix (`backup:<absolute path>`, `pitr:<ISO-8601 UTC>`,
  `migration:<version>`) so a ref alone says what will happen. Everything that can refuse a
  rollback (missing or unreadable dump, time outside the window, rollback script missing)
  refuses in `plan()`, before approval, never halfway through a run.
- `describe()` feeds the approval hash, so it names only what is known at plan time (database,
  file, time, versions) and never the wall clock: names stamped with the time of a step
  (`pre_rollback_<db>_<ts>.dump`, `<db>_pre_rollback_<ts>`) are chosen when the step runs and
  kept in `ctx.memory`, so a resumed step reuses them instead of making new ones.
- Every destructive step is preceded by a pg_dump of the current state that is checked with
  `pg_restore --list` before the step reports success. For RDS nothing is destroyed: the live
  instance is renamed aside and kept, which is its own pre-rollback state.
- Self-hosted "point in time" means the newest dump taken at or before the chosen time; the
  dump is restored into `<db>_recovery`, verified there, and swapped in. `ALTER DATABASE ...
  RENAME` fails while anyone is connected, so the swap refuses new connections first, ends
  the open sessions and retries the two renames (one transaction, run from the maintenance
  database) until they go through or the step's deadline passes. The database that was live
  is kept as `<db>_pre_rollback_<ts>`. How long connections were refused is reported.
- RDS: `restore_db_instance_to_point_in_time` into `<id>-pitr-<time>` (a name derived from the
  chosen time, so describe() can show it), poll until available within the step's deadline
  (TemporaryError when the deadline cuts the wait short), then swap identifiers. Verification
  queries against RDS endpoints are configurable (`RdsInstance.verify`, default on): moto's
  instances have no PostgreSQL behind them, so its tests switch it off.
- Credentials: the password is read from its SecretRef when a connection is made, given to
  psycopg as a keyword and to pg_dump/pg_restore in PGPASSWORD only. Command lines are
  recorded (StepResult.data["command"]) because they never hold it.
- SQL safety: database, role and table names are composed with psycopg.sql.Identifier;
  values go as bind parameters or sql.Literal. Rollback scripts and verification queries come
  from the config and migrations directory, never from Slack; a user-typed backup path must
  lie inside the configured backups directory.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from psycopg.conninfo import make_conninfo

from actions.aws import aws_session
from actions.base import (
    Action,
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    StepContext,
    StepResult,
    TargetPlan,
    TemporaryError,
)
from actions.params import AwsConnection, SecretRef, Strict

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient

log = logging.getLogger(__name__)

APP_NAME = "rollback-bot"
RECOVERY_MARKER = "rollback-bot recovery database"
PG_NAME_MAX = 63
RDS_ID_MAX = 63


class DatabaseConnection(Strict):
    """Where the target PostgreSQL is; the password comes from the environment or a file."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str
    password: SecretRef | None = None
    sslmode: str | None = None
    maintenance_dbname: str = "postgres"


class VerificationQuery(Strict):
    """A query whose single row is posted as a table; `nonzero` columns must not be 0 or NULL."""

    name: str
    sql: str
    nonzero: list[str] = []


class RdsInstance(Strict):
    """An Amazon RDS instance restored with restore_db_instance_to_point_in_time.

    `verify`: run the verification queries against the restored and the live endpoints
    (needs the endpoints reachable from the bot; off for moto).
    """

    instance_id: str
    instance_class: str | None = None
    aws: AwsConnection = AwsConnection()
    verify: bool = True
    poll_interval: float = 15.0


Method = Literal["pitr", "backup", "migration"]


class DatabaseParams(Strict):
    """A database and the rollback methods allowed for it.

    `backups`: directory of pg_dump custom-format files (`<dbname>_<YYYYmmdd_HHMMSS>.dump`).
    `migrations`: directory holding `<version>_*.sql` and `rollback_<version>.sql`.
    `verification`: None means the procedures' VoxFlow queries.
    """

    kind: Literal["database"]
    connection: DatabaseConnection
    methods: list[Method] = ["backup"]
    backups: str | None = None
    migrations: str | None = None
    migrations_table: str = "schema_migrations"
    rds: RdsInstance | None = None
    verification: list[VerificationQuery] | None = None
    restore_jobs: int = 2
    restore_timeout: float = 3600.0
    swap_timeout: float = 120.0


DEFAULT_VERIFICATION: tuple[VerificationQuery, ...] = (
    VerificationQuery(
        name="users",
        sql="SELECT COUNT(*) AS total_users,"
        " COUNT(*) FILTER (WHERE is_active = true) AS active_users,"
        " MAX(created_at) AS latest_user_created, MIN(created_at) AS earliest_user_created"
        " FROM users",
        nonzero=["total_users"],
    ),
    VerificationQuery(
        name="agents",
        sql="SELECT COUNT(*) AS total_agents, COUNT(DISTINCT user_id) AS users_with_agents,"
        " MAX(created_at) AS latest_agent_created FROM agents",
        nonzero=["total_agents"],
    ),
    VerificationQuery(
        name="campaigns",
        sql="SELECT COUNT(*) AS total_campaigns,"
        " COUNT(*) FILTER (WHERE status = 'active') AS active_campaigns,"
        " MAX(created_at) AS latest_campaign_created FROM campaigns",
        nonzero=["total_campaigns"],
    ),
    VerificationQuery(
        name="user_usage_tracking",
        sql="SELECT COUNT(*) AS total_usage_records, MAX(date) AS latest_usage_date,"
        " SUM(total_tokens) AS total_tokens_tracked FROM user_usage_tracking",
        nonzero=["total_usage_records"],
    ),
    VerificationQuery(
        name="user_api_keys",
        sql="SELECT COUNT(*) AS total_api_keys, COUNT(DISTINCT user_id) AS users_with_keys,"
        " COUNT(*) FILTER (WHERE is_active = true) AS active_keys FROM user_api_keys",
        nonzero=["total_api_keys"],
    ),
)


# ---------------------------------------------------------------- formatting and names


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """Format `moment` as the `YYYYmmdd_HHMMSS` used in file and database names."""
    return moment.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def human_size(size: float) -> str:
    """Format a byte count for people (`12.3 MB`)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_duration(seconds: float) -> str:
    """Format a duration for people (`45 s`, `12 min`, `3.5 h`)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def iso(moment: datetime) -> str:
    """Format `moment` as ISO-8601 UTC without microseconds."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def pitr_ref(moment: datetime) -> str:
    """Return the ref of a point in time (UTC, full precision so window ends stay inside)."""
    return f"pitr:{moment.astimezone(UTC).isoformat()}"


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise PlanningError(f"not an ISO-8601 time: {text!r}") from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_ref(ref: str) -> tuple[Method, str]:
    """Split a rollback point ref into its method and value."""
    method, _, value = ref.partition(":")
    if method not in ("backup", "pitr", "migration") or not value:
        raise PlanningError(
            f"unknown rollback point {ref!r}: expected backup:<path>, pitr:<time> "
            "or migration:<version>"
        )
    return method, value  # type: ignore[return-value]


def version_key(version: str) -> tuple[int, int, str]:
    """Order migration versions: numeric ones by value, then the others by text."""
    return (0, int(version), version) if version.isdigit() else (1, 0, version)


def _check_pg_name(name: str) -> None:
    if len(name.encode()) > PG_NAME_MAX:
        raise PlanningError(f"database name {name!r} would exceed {PG_NAME_MAX} bytes")


# ---------------------------------------------------------------- connections and tools


def _password(conn: DatabaseConnection) -> str | None:
    return conn.password.read().get_secret_value() if conn.password is not None else None


def connect(
    conn: DatabaseConnection, *, autocommit: bool = True, timeout: float = 10.0
) -> psycopg.Connection[Any]:
    """Open a psycopg connection; the password goes as a keyword, never into a string."""
    kwargs: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "user": conn.user,
        "dbname": conn.dbname,
        "connect_timeout": max(1, int(timeout)),
        "application_name": APP_NAME,
    }
    if conn.sslmode:
        kwargs["sslmode"] = conn.sslmode
    password = _password(conn)
    if password is not None:
        kwargs["password"] = password
    return psycopg.connect(autocommit=autocommit, **kwargs)


def on_database(conn: DatabaseConnection, dbname: str) -> DatabaseConnection:
    """Return the same server connection settings aimed at another database."""
    return conn.model_copy(update={"dbname": dbname})


def maintenance(conn: DatabaseConnection) -> DatabaseConnection:
    """Return the connection to the maintenance database (renames run from there)."""
    return on_database(conn, conn.maintenance_dbname)


def first_line(error: BaseException) -> str:
    """Return the first line of an error's message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def step_errors(what: str) -> Iterator[None]:
    """Turn psycopg errors into runner errors: lost connections are retried, the rest stop."""
    try:
        yield
    except psycopg.OperationalError as error:
        raise TemporaryError(f"{what}: {first_line(error)}", delay=2.0) from error
    except psycopg.Error as error:
        raise PermanentError(f"{what}: {first_line(error)}") from error


@contextmanager
def planning_errors(what: str) -> Iterator[None]:
    """Turn psycopg errors met while planning into PlanningError."""
    try:
        yield
    except psycopg.Error as error:
        raise PlanningError(f"{what}: {first_line(error)}") from error


@dataclass(frozen=True)
class ToolRun:
    """A finished pg_dump / pg_restore: its command line (no secrets), exit code and output."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def tail(self, lines: int = 20) -> str:
        """Return the last lines of stderr, pg_restore's own account of what went wrong."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


def tool_env(conn: DatabaseConnection | None) -> dict[str, str]:
    """Build a pg tool's environment: PGPASSWORD only from the configured secret."""
    env = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    env["PGAPPNAME"] = APP_NAME
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    if conn is not None:
        if conn.sslmode:
            env["PGSSLMODE"] = conn.sslmode
        password = _password(conn)
        if password is not None:
            env["PGPASSWORD"] = password
    return env


def conn_args(conn: DatabaseConnection) -> list[str]:
    """Return host/port/user/dbname options; the database name is quoted as a conninfo."""
    return [
        f"--host={conn.host}",
        f"--port={conn.port}",
        f"--username={conn.user}",
        f"--dbname={make_conninfo(dbname=conn.dbname)}",
    ]


def run_tool(argv: Sequence[str], *, conn: DatabaseConnection | None, timeout: float) -> ToolRun:
    """Run a pg tool in its own process group, killing the group when `timeout` passes."""
    command = shlex.join(argv)
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        env=tool_env(conn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PermanentError(f"{argv[0]} was stopped after {timeout:.0f}s: {command}") from None
    return ToolRun(command, proc.returncode, out, err, time.monotonic() - started)


@dataclass(frozen=True)
class ArchiveInfo:
    """What `pg_restore --list` says about a dump."""

    readable: bool
    format: str | None = None
    entries: int = 0
    error: str = ""

    @property
    def parallel(self) -> bool:
        """Say whether pg_restore can restore this archive with several jobs."""
        return self.format in ("CUSTOM", "DIRECTORY")


def inspect_archive(path: Path, *, timeout: float = 120.0) -> ArchiveInfo:
    """Check a dump with `pg_restore --list` and read its format from the header."""
    if not path.exists():
        return ArchiveInfo(False, error=f"{path} does not exist")
    if not os.access(path, os.R_OK):
        return ArchiveInfo(False, error=f"{path} is not readable by the bot")
    run = run_tool(["pg_restore", "--list", str(path)], conn=None, timeout=timeout)
    if run.returncode != 0:
        return ArchiveInfo(False, error=run.tail() or f"pg_restore exited {run.returncode}")
    found = re.search(r"^;\s+Format: (\w+)", run.stdout, re.MULTILINE)
    entries = sum(1 for line in run.stdout.splitlines() if line and not line.startswith(";"))
    return ArchiveInfo(True, found.group(1) if found else None, entries)


def pg_restore(
    dump: Path, *, conn: DatabaseConnection, jobs: int, clean: bool, timeout: float
) -> ToolRun:
    """Restore `dump` into conn's database; fail with pg_restore's message on any error."""
    argv = ["pg_restore", "--no-password", *conn_args(conn)]
    if clean:
        argv += ["--clean", "--if-exists"]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    run = run_tool([*argv, str(dump)], conn=conn, timeout=timeout)
    if run.returncode != 0 or "errors ignored on restore" in run.stderr:
        raise PermanentError(
            f"pg_restore of {dump} into {conn.dbname} failed (exit {run.returncode}):\n{run.tail()}"
        )
    return run


def _restore_result(run: ToolRun, *, dump: Path, dbname: str) -> StepResult:
    size = dump.stat().st_size
    rate = size / max(run.seconds, 1e-3)
    return StepResult(
        summary=f"Restored {dump.name} into {dbname}: {human_size(size)} in "
        f"{run.seconds:.1f} s ({human_size(rate)}/s)",
        output=f"$ {run.command}\n{run.stderr}".strip(),
        data={
            "restore_bytes_per_second": rate,
            "bytes": size,
            "seconds": run.seconds,
            "command": run.command,
        },
    )


# ---------------------------------------------------------------- backups on disk


@dataclass(frozen=True)
class Backup:
    """One dump file in the backups directory."""

    path: Path
    taken_at: datetime
    size: int
    pre_rollback: bool = False

    def label(self, now: datetime) -> str:
        """Describe the backup for the modal: name, age, size."""
        kind = "pre-rollback backup" if self.pre_rollback else "backup"
        age = human_duration(max(0.0, (now - self.taken_at).total_seconds()))
        return f"{kind} {self.path.name} · {age} ago · {human_size(self.size)}"


def list_backups(directory: Path, dbname: str) -> list[Backup]:
    """List `<db>_<ts>.dump` and `pre_rollback_<db>_<ts>.dump` in `directory`, newest first."""
    pattern = re.compile(rf"(pre_rollback_)?{re.escape(dbname)}_(\d{{8}}_\d{{6}})\.dump")
    found = []
    for path in directory.glob("*.dump") if directory.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            taken = datetime.strptime(match.group(2), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
            found.append(Backup(path.resolve(), taken, path.stat().st_size, bool(match.group(1))))
    return sorted(found, key=lambda b: (b.taken_at, b.path.name), reverse=True)


# ---------------------------------------------------------------- verification


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render rows as a plain-text table with a header and a rule."""
    rows = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    return value.isoformat() if isinstance(value, datetime) else str(value)


def run_query(
    cur: psycopg.Cursor[Any], query: VerificationQuery
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Run one verification query: its table rows, and what failed (empty when it passed)."""
    try:
        cur.execute(query.sql.encode())
        row = cur.fetchone()
    except psycopg.Error as error:
        message = first_line(error)
        return [(query.name, "(error)", message)], [f"{query.name}: query failed: {message}"]
    if row is None or cur.description is None:
        return [(query.name, "(no row)", "")], [f"{query.name}: the query returned no row"]
    values = dict(zip([col.name for col in cur.description], row, strict=True))
    rows = [
        (query.name if i == 0 else "", col, _cell(v)) for i, (col, v) in enumerate(values.items())
    ]
    failures = [
        f"{query.name}: {col} is {_cell(values.get(col))}"
        if col in values
        else f"{query.name}: no column {col}"
        for col in query.nonzero
        if values.get(col) in (None, 0)
    ]
    return rows, failures


def run_verification(
    conn: DatabaseConnection, queries: Sequence[VerificationQuery], *, timeout: float
) -> tuple[str, list[str]]:
    """Run the queries read-only, one transaction each; return the table and the failures."""
    rows: list[tuple[str, str, str]] = []
    failures: list[str] = []
    with connect(conn, timeout=timeout) as pg, pg.cursor() as cur:
        cur.execute("SET default_transaction_read_only = on")
        cur.execute(sql.SQL("SET statement_timeout = {}").format(int(max(timeout, 1) * 1000)))
        for query in queries:
            got, failed = run_query(cur, query)
            rows += got
            failures += failed
    return render_table(("check", "column", "value"), rows), failures


# ---------------------------------------------------------------- PostgreSQL catalog helpers


def database_exists(pg: psycopg.Connection[Any], name: str) -> bool:
    """Say whether a database called `name` exists on the server."""
    return (
        pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    )


def database_comment(pg: psycopg.Connection[Any], name: str) -> str | None:
    """Return the comment on database `name` (None when absent)."""
    row = pg.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    return row[0] if row else None


def allow_connections(pg: psycopg.Connection[Any], name: str, allow: bool) -> None:
    """Set ALLOW_CONNECTIONS on database `name`, if it exists."""
    if database_exists(pg, name):
        pg.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allow else "false")
            )
        )


def terminate_sessions(pg: psycopg.Connection[Any], names: Sequence[str]) -> int:
    """End every other session on the named databases; return how many were signalled."""
    row = pg.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
        (list(names),),
    ).fetchone()
    return int(row[0]) if row else 0


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


# ---------------------------------------------------------------- actions: self-hosted PostgreSQL


@dataclass
class PreRollbackBackup:
    """pg_dump the current state (custom format) and check it reads back."""

    conn: DatabaseConnection
    directory: Path
    timeout: float
    now: Callable[[], datetime] = utcnow
    name = "database.pre_rollback_backup"
    idempotent = True

    def describe(self) -> str:
        """Say which database is dumped where."""
        db = self.conn.dbname
        return (
            f"Back up {db} on {self.conn.host}:{self.conn.port} with pg_dump (custom format) to "
            f"{self.directory}/pre_rollback_{db}_<time of this step>.dump and check it with "
            "pg_restore --list"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Dump to a partial file, check it, then move it into place."""
        key = f"database.pre_rollback_backup:{self.conn.dbname}"
        earlier = ctx.memory.get(key)
        if earlier and inspect_archive(Path(earlier)).readable:
            return StepResult(
                summary=f"Pre-rollback backup already taken: {earlier}", data={"path": earlier}
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"pre_rollback_{self.conn.dbname}_{stamp(self.now())}.dump"
        partial = final.with_name(f".{final.name}.partial")
        run = run_tool(
            [
                "pg_dump",
                "--no-password",
                *conn_args(self.conn),
                "--format=custom",
                f"--file={partial}",
            ],
            conn=self.conn,
            timeout=ctx.remaining(),
        )
        if run.returncode != 0:
            partial.unlink(missing_ok=True)
            raise PermanentError(f"pg_dump of {self.conn.dbname} failed:\n{run.tail()}")
        return self._keep(ctx, run=run, partial=partial, final=final, key=key)

    def _keep(
        self, ctx: StepContext, *, run: ToolRun, partial: Path, final: Path, key: str
    ) -> StepResult:
        info = inspect_archive(partial, timeout=max(ctx.remaining(), 1.0))
        if not info.readable:
            raise PermanentError(f"the pre-rollback backup does not read back: {info.error}")
        partial.chmod(0o600)
        partial.replace(final)
        ctx.memory[key] = str(final)
        size = final.stat().st_size
        log.info("%s: pre-rollback backup of %s at %s", ctx.incident_id, self.conn.dbname, final)
        return StepResult(
            summary=f"Backed up {self.conn.dbname} to {final} ({human_size(size)}, "
            f"{info.entries} entries, checked with pg_restore --list)",
            output=f"$ {run.command}\n{run.stderr}".strip(),
            data={"path": str(final), "bytes": size, "command": run.command},
        )


@dataclass
class RestoreBackup:
    """pg_restore --clean --if-exists a dump into the live database."""

    conn: DatabaseConnection
    dump: Path
    jobs: int
    timeout: float
    name = "database.restore_backup"
    idempotent = True

    def describe(self) -> str:
        """Say which dump replaces which database's contents."""
        jobs = f" --jobs={self.jobs}" if self.jobs > 1 else ""
        return (
            f"Replace the contents of {self.conn.dbname} on {self.conn.host}:{self.conn.port} "
            f"with {self.dump} (pg_restore --clean --if-exists{jobs})"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Restore and measure bytes per second."""
        if not self.dump.is_file():
            raise PermanentError(f"{self.dump} is gone")
        run = pg_restore(
            self.dump, conn=self.conn, jobs=self.jobs, clean=True, timeout=ctx.remaining()
        )
        log.info("%s: restored %s into %s", ctx.incident_id, self.dump, self.conn.dbname)
        return _restore_result(run, dump=self.dump, dbname=self.conn.dbname)


@dataclass
class RestoreIntoRecovery:
    """Create the recovery database like the live one and restore a dump into it."""

    conn: DatabaseConnection
    dump: Path
    recovery: str
    jobs: int
    timeout: float
    name = "database.restore_into_recovery"
    idempotent = True

    def describe(self) -> str:
        """Say which dump goes into which new database."""
        return (
            f"Create database {self.recovery} (owner, encoding and collation of "
            f"{self.conn.dbname}) and restore {self.dump} into it with pg_restore"
            f"{f' --jobs={self.jobs}' if self.jobs > 1 else ''}; {self.conn.dbname} is not touched"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Replace a leftover recovery database of ours, create a fresh one, restore."""
        with (
            step_errors(f"creating {self.recovery}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            self._drop_leftover(pg)
            self._create(pg)
        target = on_database(self.conn, self.recovery)
        run = pg_restore(
            self.dump, conn=target, jobs=self.jobs, clean=False, timeout=ctx.remaining()
        )
        return _restore_result(run, dump=self.dump, dbname=self.recovery)

    def _drop_leftover(self, pg: psycopg.Connection[Any]) -> None:
        if not database_exists(pg, self.recovery):
            return
        if database_comment(pg, self.recovery) != RECOVERY_MARKER:
            raise PermanentError(
                f"database {self.recovery} exists and was not made by the bot; rename or drop it"
            )
        pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.recovery)))

    def _create(self, pg: psycopg.Connection[Any]) -> None:
        row = pg.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype"
            " FROM pg_database WHERE datname = %s",
            (self.conn.dbname,),
        ).fetchone()
        if row is None:
            raise PermanentError(f"database {self.conn.dbname} does not exist")
        owner, encoding, collate, ctype = row
        pg.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 OWNER {} ENCODING {}"
                " LC_COLLATE {} LC_CTYPE {}"
            ).format(
                sql.Identifier(self.recovery),
                sql.Identifier(owner),
                sql.Literal(encoding),
                sql.Literal(collate),
                sql.Literal(ctype),
            )
        )
        pg.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(self.recovery), sql.Literal(RECOVERY_MARKER)
            )
        )


@dataclass
class SwapDatabases:
    """Put the recovery database in place of the live one, keeping the live one aside."""

    conn: DatabaseConnection
    recovery: str
    timeout: float
    now: Callable[[], datetime] = utcnow
    retry_delay: float = 0.2
    lock_wait: float = 5.0
    name = "database.swap"
    idempotent = True

    def describe(self) -> str:
        """Say which databases are renamed to what."""
        live = self.conn.dbname
        return (
            f"Refuse new connections to {live} and {self.recovery}, end their open sessions, "
            f"then in one transaction from database {self.conn.maintenance_dbname} rename {live} "
            f"to {live}_pre_rollback_<time of the swap> and {self.recovery} to {live}; "
            "allow connections again"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Swap, retrying while sessions are still closing; report the refusal time."""
        live = self.conn.dbname
        key = f"database.swap:{live}"
        aside = ctx.memory.get(key) or f"{live}_pre_rollback_{stamp(self.now())}"
        ctx.memory[key] = aside
        with (
            step_errors(f"swapping {self.recovery} in place of {live}"),
            connect(maintenance(self.conn), timeout=ctx.remaining()) as pg,
        ):
            if not database_exists(pg, self.recovery):
                return self._already_swapped(pg, aside=aside)
            return self._swap(pg, ctx, aside=aside)

    def _already_swapped(self, pg: psycopg.Connection[Any], *, aside: str) -> StepResult:
        live = self.conn.dbname
        if not database_exists(pg, aside):
            raise PermanentError(f"database {self.recovery} does not exist; nothing to swap in")
        allow_connections(pg, live, True)
        return StepResult(
            summary=f"{live} was already swapped; {aside} kept", data={"aside": aside}
        )

    def _swap(self, pg: psycopg.Connection[Any], ctx: StepContext, *, aside: str) -> StepResult:
        live = self.conn.dbname
        refused_at = time.monotonic()
        try:
            allow_connections(pg, live, False)
            allow_connections(pg, self.recovery, False)
            attempts, ended = self._rename(pg, ctx, aside=aside)
        finally:
            for name in (live, aside, self.recovery):
                allow_connections(pg, name, True)
            refused = time.monotonic() - refused_at
        log.info("%s: swapped %s in place of %s", ctx.incident_id, self.recovery, live)
        return StepResult(
            summary=f"{self.recovery} is now {live}; the previous {live} is kept as {aside}. "
            f"Connections were refused for {refused:.2f} s",
            output=f"ended {ended} session(s); renamed after {attempts} attempt(s)",
            data={
                "aside": aside,
                "connections_refused_seconds": refused,
                "sessions_ended": ended,
                "attempts": attempts,
            },
        )

    def _rename(
        self, pg: psycopg.Connection[Any], ctx: StepContext, *, aside: str
    ) -> tuple[int, int]:
        live, ended, attempts = self.conn.dbname, 0, 0
        while True:
            attempts += 1
            ended += terminate_sessions(pg, [live, self.recovery])
            try:
                with pg.transaction():
                    wait = int(
                        min(self.lock_wait, max(ctx.remaining() - self.retry_delay, 0.1)) * 1000
                    )
                    pg.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(f"{wait}ms"))
                    for old, new in ((live, aside), (self.recovery, live)):
                        pg.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(old), sql.Identifier(new)
                            )
                        )
                return attempts, ended
            except (psycopg.errors.ObjectInUse, psycopg.errors.LockNotAvailable) as error:
                if ctx.remaining() <= self.retry_delay:
                    raise PermanentError(
                        f"could not rename {live} after {attempts} attempts: {first_line(error)}"
                    ) from error
                ctx.emit(f"attempt {attempts}: {first_line(error)}; retrying")
                time.sleep(self.retry_delay)


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


@dataclass
class VerifyDatabase:
    """Run the verification queries and post their table; a failed check fails the step."""

    conn: DatabaseConnection
    queries: tuple[VerificationQuery, ...]
    timeout: float = 120.0
    rds: RdsInstance | None = None
    instance_id: str | None = None
    name = "database.verify"
    idempotent = True

    def describe(self) -> str:
        """Say where the queries run and what must hold."""
        names = ", ".join(q.name for q in self.queries)
        musts = [f"{q.name}.{col}" for q in self.queries for col in q.nonzero]
        where = (
            f"database {self.conn.dbname} of RDS instance {self.instance_id}"
            if self.instance_id
            else f"{self.conn.dbname} on {self.conn.host}:{self.conn.port}"
        )
        rule = f"; fail if {', '.join(musts)} is 0 or NULL" if musts else ""
        return f"Run the verification queries ({names}) on {where}{rule}, or if a query errors"

    def run(self, ctx: StepContext) -> StepResult:
        """Run every query, then fail naming each failed check."""
        conn = self._endpoint() if self.instance_id else self.conn
        with step_errors(f"connecting to {conn.dbname} on {conn.host}"):
            table, failures = run_verification(
                conn, self.queries, timeout=min(ctx.remaining(), 60.0)
            )
        for line in table.splitlines():
            ctx.emit(line)
        if failures:
            raise PermanentError("verification failed: " + "; ".join(failures) + "\n" + table)
        return StepResult(
            summary=f"{len(self.queries)} verification checks passed on {conn.dbname}", output=table
        )

    def _endpoint(self) -> DatabaseConnection:
        assert self.rds is not None and self.instance_id is not None
        with rds_errors(f"looking up the endpoint of {self.instance_id}"):
            found = describe_instance(rds_client(self.rds.aws), self.instance_id)
        endpoint = (found or {}).get("Endpoint") or {}
        if "Address" not in endpoint:
            raise TemporaryError(f"RDS instance {self.instance_id} has no endpoint yet", delay=5)
        return self.conn.model_copy(
            update={"host": endpoint["Address"], "port": endpoint.get("Port", self.conn.port)}
        )


# ---------------------------------------------------------------- actions: Amazon RDS

RDS_FAILED = {
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "storage-full",
    "inaccessible-encryption-credentials",
    "deleting",
}


RETRYABLE_AWS = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "InternalFailure"}


@contextmanager
def rds_errors(what: str, *, planning: bool = False) -> Iterator[None]:
    """Turn boto errors into runner errors (throttling and lost connections are retried).

    Not `actions.aws.aws_errors`: while planning every AWS failure is a
    PlanningError, the retried codes differ (InternalFailure, not 5xx) and any
    BotoCoreError (credentials included) is retried, as the RDS steps always did.
    """
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if planning:
            raise PlanningError(f"{what}: {first_line(error)}") from error
        if code in RETRYABLE_AWS:
            raise TemporaryError(f"{what}: {first_line(error)}", delay=5.0) from error
        raise PermanentError(f"{what}: {first_line(error)}") from error
    except BotoCoreError as error:
        if planning:
            raise PlanningError(f"{what}: {first_line(error)}") from error
        raise TemporaryError(f"{what}: {first_line(error)}", delay=5.0) from error


def rds_client(aws: AwsConnection) -> RDSClient:
    """Build an RDS client from the connection settings."""
    return aws_session(aws).client("rds", endpoint_url=aws.endpoint_url)


def describe_instance(client: RDSClient, instance_id: str) -> dict[str, Any] | None:
    """Return one instance's description, or None when there is no such instance."""
    try:
        found = client.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    except client.exceptions.DBInstanceNotFoundFault:
        return None
    return dict(found[0]) if found else None


def restorable_window(client: RDSClient, instance_id: str) -> tuple[datetime, datetime] | None:
    """Return (earliest, latest) restorable times, or None when PITR is not possible.

    When EarliestRestorableTime is absent but automated backups are on (moto does this),
    the window starts at the instance's creation; AWS itself still refuses a time before
    its first backup, and the restore step reports that refusal.
    """
    found = describe_instance(client, instance_id)
    if found is None:
        raise PlanningError(f"RDS instance {instance_id} does not exist")
    latest = found.get("LatestRestorableTime")
    earliest = found.get("EarliestRestorableTime")
    if earliest is None and found.get("BackupRetentionPeriod", 0) > 0:
        earliest = found.get("InstanceCreateTime")
    if earliest is None or latest is None:
        return None
    return earliest.astimezone(UTC), latest.astimezone(UTC)


def wait_available(
    client: RDSClient, instance_id: str, ctx: StepContext, *, poll: float
) -> dict[str, Any]:
    """Poll until the instance is available; TemporaryError when the deadline cuts in."""
    while True:
        found = describe_instance(client, instance_id)
        status = found.get("DBInstanceStatus", "unknown") if found else "not found"
        if found is not None and status == "available":
            return found
        if status in RDS_FAILED:
            raise PermanentError(f"RDS instance {instance_id} is {status}")
        if ctx.remaining() <= poll:
            raise TemporaryError(f"RDS instance {instance_id} is still {status}", delay=poll)
        time.sleep(poll)


def rds_stamp(moment: datetime) -> str:
    """Format `moment` for RDS identifiers (letters, digits, hyphens only)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


@dataclass
class RdsRestoreToTime:
    """Restore an RDS instance to a point in time as a new instance and wait for it."""

    rds: RdsInstance
    restored_id: str
    restore_time: datetime
    timeout: float
    name = "database.rds_restore"
    idempotent = True

    def describe(self) -> str:
        """Say which instance is restored to which time under which name."""
        return (
            f"Restore RDS instance {self.rds.instance_id} to {iso(self.restore_time)} as new "
            f"instance {self.restored_id} (restore_db_instance_to_point_in_time) and wait until "
            f"it is available; {self.rds.instance_id} is not touched"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Start the restore once (remembered), then wait within the deadline."""
        with rds_errors(f"restoring {self.rds.instance_id}"):
            return self._run(ctx)

    def _run(self, ctx: StepContext) -> StepResult:
        client = rds_client(self.rds.aws)
        key = f"database.rds_restore:{self.restored_id}"
        if not ctx.memory.get(key):
            self._start(client)
            ctx.memory[key] = True
            ctx.emit(f"restore of {self.rds.instance_id} to {iso(self.restore_time)} started")
        started = time.monotonic()
        found = wait_available(client, self.restored_id, ctx, poll=self.rds.poll_interval)
        return StepResult(
            summary=f"{self.restored_id} is available, restored to {iso(self.restore_time)}",
            data={
                "restored_instance": self.restored_id,
                "restore_time": iso(self.restore_time),
                "endpoint": (found.get("Endpoint") or {}).get("Address"),
                "waited_seconds": time.monotonic() - started,
            },
        )

    def _start(self, client: RDSClient) -> None:
        if describe_instance(client, self.restored_id) is not None:
            raise PermanentError(f"RDS instance {self.restored_id} already exists")
        extra: dict[str, Any] = {}
        if self.rds.instance_class:
            extra["DBInstanceClass"] = self.rds.instance_class
        client.restore_db_instance_to_point_in_time(
            SourceDBInstanceIdentifier=self.rds.instance_id,
            TargetDBInstanceIdentifier=self.restored_id,
            RestoreTime=self.restore_time,
            **extra,
        )


@dataclass
class RdsSwap:
    """Rename the live instance aside and the restored one into its place."""

    rds: RdsInstance
    restored_id: str
    timeout: float
    now: Callable[[], datetime] = utcnow
    name = "database.rds_swap"
    idempotent = True

    def describe(self) -> str:
        """Say which identifiers change."""
        live = self.rds.instance_id
        return (
            f"Rename RDS instance {live} to {live}-pre-rollback-<time of the swap>, then "
            f"{self.restored_id} to {live} (modify_db_instance, ApplyImmediately), waiting for "
            "each rename"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Do whichever renames are still to do, waiting for each."""
        with rds_errors(f"swapping {self.restored_id} in place of {self.rds.instance_id}"):
            return self._run(ctx)

    def _run(self, ctx: StepContext) -> StepResult:
        client, live = rds_client(self.rds.aws), self.rds.instance_id
        key = f"database.rds_swap:{live}"
        aside = ctx.memory.get(key) or f"{live}-pre-rollback-{rds_stamp(self.now())}"
        ctx.memory[key] = aside
        started = time.monotonic()
        if describe_instance(client, self.restored_id) is not None:
            if describe_instance(client, aside) is None:
                self._rename(client, live, aside)
            self._wait_gone(client, live, ctx)
            wait_available(client, aside, ctx, poll=self.rds.poll_interval)
            self._rename(client, self.restored_id, live)
        wait_available(client, live, ctx, poll=self.rds.poll_interval)
        unavailable = time.monotonic() - started
        return StepResult(
            summary=f"{self.restored_id} is now {live}; the previous {live} is kept as {aside}. "
            f"The {live} endpoint was unavailable for about {unavailable:.1f} s",
            data={"aside": aside, "live": live, "endpoint_unavailable_seconds": unavailable},
        )

    def _rename(self, client: RDSClient, old: str, new: str) -> None:
        client.modify_db_instance(
            DBInstanceIdentifier=old, NewDBInstanceIdentifier=new, ApplyImmediately=True
        )

    def _wait_gone(self, client: RDSClient, instance_id: str, ctx: StepContext) -> None:
        while describe_instance(client, instance_id) is not None:
            if ctx.remaining() <= self.rds.poll_interval:
                raise TemporaryError(
                    f"{instance_id} is still being renamed", delay=self.rds.poll_interval
                )
            time.sleep(self.rds.poll_interval)


# ---------------------------------------------------------------- the target


class DatabaseTarget:
    """One configured database: its rollback points, checks and plans."""

    def __init__(
        self,
        params: DatabaseParams,
        *,
        restore_rate: float | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.params = params
        self.restore_rate = restore_rate
        self.now = now or utcnow

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
        """Return the restorable window: RDS's own, or the span of the backups."""
        rds = self.params.rds
        if rds is not None:
            with rds_errors(f"reading RDS instance {rds.instance_id}", planning=True):
                return restorable_window(rds_client(rds.aws), rds.instance_id)
        taken = [b.taken_at for b in self.backups()]
        return (min(taken), max(taken)) if taken else None

    def applied_migrations(self) -> list[str]:
        """Read the applied migration versions, newest first."""
        with planning_errors(f"reading {self.params.migrations_table} of {self.dbname}"):
            return applied_versions(self.params.connection, self.params.migrations_table)

    def points(self) -> list[RollbackPoint]:
        """List the rollback points of every allowed method, each group newest first."""
        listers = {
            "backup": self._backup_points,
            "pitr": self._pitr_points,
            "migration": self._migration_points,
        }
        return [point for method in self.params.methods for point in listers[method]()]

    def _backup_points(self) -> list[RollbackPoint]:
        now = self.now()
        return [RollbackPoint(f"backup:{b.path}", b.label(now), b.taken_at) for b in self.backups()]

    def _pitr_points(self) -> list[RollbackPoint]:
        window = self.pitr_window()
        if window is None:
            return []
        earliest, latest = window
        source = f"RDS {self.params.rds.instance_id}" if self.params.rds else "backups"
        label = f"point in time ({source}): any time from {iso(earliest)} to {iso(latest)}"
        return [RollbackPoint(pitr_ref(latest), label, latest)]

    def _migration_points(self) -> list[RollbackPoint]:
        versions = self.applied_migrations()
        return [
            RollbackPoint(f"migration:{v}", f"migration {v} · current", is_current=True)
            if i == 0
            else RollbackPoint(
                f"migration:{v}", f"migration {v} · rolls back {i} newer migration(s)"
            )
            for i, v in enumerate(versions)
        ]

    # -- resolving refs

    def default_ref(self) -> str:
        """Return the default point of the first allowed method."""
        method = self.params.methods[0]
        if method == "backup":
            regular = [b for b in self.backups() if not b.pre_rollback] or self.backups()
            if regular:
                return f"backup:{regular[0].path}"
        elif method == "pitr":
            window = self.pitr_window()
            if window:
                return pitr_ref(window[1])
        else:
            versions = self.applied_migrations()
            if len(versions) > 1:
                return f"migration:{versions[1]}"
        raise PlanningError(f"no {method} rollback point for {self.dbname}")

    def _resolve(self, ref: str | None) -> tuple[Method, str]:
        method, value = parse_ref(ref or self.default_ref())
        if method not in self.params.methods:
            raise PlanningError(f"{method} rollback is not allowed for {self.dbname}")
        return method, value

    def _backup_path(self, value: str) -> Path:
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
        return info

    def _inside_window(self, moment: datetime) -> str:
        """Refuse a time outside the restorable window; describe where it falls."""
        window = self.pitr_window()
        if window is None:
            raise PlanningError(f"no point-in-time window for {self.dbname}")
        span = f"{iso(window[0])} to {iso(window[1])}"
        if not window[0] <= moment <= window[1]:
            raise PlanningError(f"{iso(moment)} is outside the restorable window {span}")
        return f"{iso(moment)} within {span}"

    def _backup_at(self, moment: datetime) -> Backup:
        """Return the newest backup taken at or before `moment`."""
        return next(b for b in self.backups() if b.taken_at <= moment)

    def _to_roll_back(self, target: str) -> list[str]:
        newer = [v for v in self.applied_migrations() if version_key(v) > version_key(target)]
        if not newer:
            raise PlanningError(f"no applied migration of {self.dbname} is newer than {target}")
        return newer

    def _rollback_script(self, version: str) -> Path | None:
        if self.params.migrations is None:
            raise PlanningError(f"no migrations directory is configured for {self.dbname}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", version):
            raise PlanningError(f"migration version {version!r} is not a plain name")
        script = Path(self.params.migrations) / f"rollback_{version}.sql"
        return script if script.is_file() else None

    # -- checks

    def checks(self, ref: str | None) -> list[Check]:
        """Run the machine-verifiable pre-rollback checks for `ref`."""
        try:
            method, value = self._resolve(ref)
            if method == "backup":
                return self._backup_checks(self._backup_path(value))
            if method == "pitr":
                return self._pitr_checks(parse_time(value))
            return self._migration_checks(value)
        except PlanningError as error:
            return [Check("rollback point", False, str(error))]

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
            f"{path} · {info.format} format, {info.entries} entries"
            if info.readable
            else info.error
        )
        checks = [Check("backup readable", info.readable, detail)]
        return [*checks, self.estimate(path.stat().st_size)] if info.readable else checks

    def _pitr_checks(self, moment: datetime) -> list[Check]:
        try:
            inside = Check("time inside restorable window", True, self._inside_window(moment))
        except PlanningError as error:
            return [Check("time inside restorable window", False, str(error))]
        if self.params.rds is not None:
            return [inside]
        backup = self._backup_at(moment)
        earlier = human_duration((moment - backup.taken_at).total_seconds())
        chosen = Check("backup chosen", True, f"{backup.path.name}, taken {earlier} earlier")
        return [inside, chosen, *self._backup_checks(backup.path), self._recovery_check()]

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
        checks = []
        for version in self._to_roll_back(target):
            script = self._rollback_script(version)
            checks.append(
                Check(
                    f"rollback script for {version}",
                    script is not None,
                    str(script) if script else f"rollback_{version}.sql is missing",
                )
            )
        return checks

    # -- plans

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Resolve `ref` into steps, or raise PlanningError before anything runs."""
        method, value = self._resolve(ref)
        if method == "backup":
            return self._backup_plan(self._backup_path(value))
        if method == "pitr":
            moment = parse_time(value)
            return self._rds_plan(moment) if self.params.rds else self._pitr_plan(moment)
        return self._migration_plan(value, force=force)

    def _verify_live(self) -> VerifyDatabase:
        return VerifyDatabase(self.params.connection, self.queries)

    def _pre_rollback(self) -> PreRollbackBackup:
        if self.params.backups is None:
            raise PlanningError(
                f"no backups directory is configured for {self.dbname}: the pre-rollback "
                "backup needs one"
            )
        return PreRollbackBackup(
            self.params.connection, Path(self.params.backups), self.params.restore_timeout, self.now
        )

    def _jobs(self, info: ArchiveInfo) -> int:
        return max(1, self.params.restore_jobs) if info.parallel else 1

    def _backup_plan(self, path: Path) -> TargetPlan:
        info = self._readable(path)
        restore = RestoreBackup(
            self.params.connection, path, self._jobs(info), self.params.restore_timeout
        )
        return TargetPlan(
            prepare=[self._pre_rollback()],
            rollback=[restore],
            verify=[self._verify_live()],
            notes=[
                f"Restores {path.name} ({human_size(path.stat().st_size)}); "
                f"{self.estimate(path.stat().st_size).detail}"
            ],
        )

    def _pitr_plan(self, moment: datetime) -> TargetPlan:
        if self.dbname == self.params.connection.maintenance_dbname:
            raise PlanningError(f"cannot swap the maintenance database {self.dbname}")
        self._inside_window(moment)
        backup = self._backup_at(moment)
        info = self._readable(backup.path)
        recovery = f"{self.dbname}_recovery"
        _check_pg_name(f"{self.dbname}_pre_rollback_{stamp(moment)}")
        if not self._recovery_check().ok:
            raise PlanningError(f"database {recovery} exists and was not made by the bot")
        conn, timeout = self.params.connection, self.params.restore_timeout
        rollback: list[Action] = [
            RestoreIntoRecovery(conn, backup.path, recovery, self._jobs(info), timeout),
            VerifyDatabase(on_database(conn, recovery), self.queries),
            SwapDatabases(conn, recovery, self.params.swap_timeout, self.now),
        ]
        return TargetPlan(
            prepare=[self._pre_rollback()],
            rollback=rollback,
            verify=[self._verify_live()],
            notes=[
                f"Point in time {iso(moment)}: restores {backup.path.name}, taken "
                f"{iso(backup.taken_at)}; {self.estimate(backup.size).detail}",
                f"The current {self.dbname} is kept as {self.dbname}_pre_rollback_<time>",
            ],
        )

    def _rds_plan(self, moment: datetime) -> TargetPlan:
        rds = self.params.rds
        assert rds is not None
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
                f"RDS {rds.instance_id} restored to {iso(moment)} as {restored}",
                f"The current instance is kept, renamed {rds.instance_id}-pre-rollback-<time>",
                "verification queries: " + ("on" if rds.verify else "off (RdsInstance.verify)"),
            ],
        )

    def _migration_plan(self, target: str, *, force: bool) -> TargetPlan:
        versions = self._to_roll_back(target)
        scripts = {v: self._rollback_script(v) for v in versions}
        missing = [v for v, script in scripts.items() if script is None]
        if missing and not force:
            raise PlanningError(
                f"no rollback script for migration(s) {', '.join(missing)} in "
                f"{self.params.migrations}; nothing was run (force overrides)"
            )
        conn, table, timeout = (
            self.params.connection,
            self.params.migrations_table,
            self.params.restore_timeout,
        )
        steps: list[Action] = [
            RollbackMigration(conn, table, v, scripts[v], timeout) for v in versions
        ]
        notes = [
            f"roll back migration {v} with {scripts[v].name}"  # type: ignore[union-attr]
            if scripts[v]
            else f"roll back migration {v}: no rollback script, row deleted only (forced)"
            for v in versions
        ]
        if missing:
            notes.append(
                f"force: rollback scripts missing for {', '.join(missing)}; "
                "override requested, their schema changes stay"
            )
        return TargetPlan(
            prepare=[self._pre_rollback()],
            rollback=steps,
            verify=[self._verify_live()],
            notes=notes,
        )
