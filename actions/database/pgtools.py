"""Talking to the target PostgreSQL: connections, pg_dump / pg_restore runs, catalog queries.

- Credentials: the password is read from its SecretRef when a connection is made, given to
  psycopg as a keyword and to pg_dump/pg_restore in PGPASSWORD only. Command lines are
  recorded (StepResult.data["command"]) because they never hold it.
- SQL safety: database, role and table names are composed with psycopg.sql.Identifier;
  values go as bind parameters or sql.Literal.
- A pg tool runs in its own process group, killed whole when the step's time is up or its
  runner must stop acting, and dies with the bot (`actions.children`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from actions.base import PermanentError, PlanningError, TemporaryError
from actions.children import run_child
from actions.database.names import first_line, human_size
from actions.database.params import DatabaseConnection

APP_NAME = "rollback-bot"
SWAP_KEY = "database.swap:{}"
"""ctx.memory key of a swap: the name the live database is (or will be) kept under."""


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


def run_tool(
    argv: Sequence[str],
    *,
    conn: DatabaseConnection | None,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    watch: Callable[[], str] | None = None,
) -> ToolRun:
    """Run a pg tool in its own process group, killing the group when `timeout` passes or
    when the step's runner must stop acting; `watch` says how far it got (`actions.children`)."""
    command = shlex.join(argv)
    started = time.monotonic()
    try:
        done = run_child(
            argv,
            timeout=max(timeout, 1.0),
            env=tool_env(conn) | (env or {}),
            cwd=cwd,
            watch=watch,
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(f"{argv[0]} was stopped after {timeout:.0f}s: {command}") from None
    return ToolRun(command, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@dataclass(frozen=True)
class ArchiveInfo:
    """What reading a dump whole says about it."""

    readable: bool
    format: str | None = None
    entries: int = 0
    error: str = ""
    roles: frozenset[str] = frozenset()
    """Roles its SQL names as owners (`OWNER TO`) and grantees (`GRANT ... TO`,
    `REVOKE ... FROM`): a restore stops at the first one the server lacks."""

    @property
    def parallel(self) -> bool:
        """Say whether pg_restore can restore this archive with several jobs."""
        return self.format in ("CUSTOM", "DIRECTORY")


def inspect_archive(path: Path, *, timeout: float = 600.0) -> ArchiveInfo:
    """Check a dump: its table of contents, then every byte of it read back.

    `pg_restore --list` reads only the header and the table of contents, so it passes dumps
    truncated to 10 % or with corrupt data blocks; `pg_restore --file=/dev/null` turns the whole
    archive into SQL, decompressing (and checksumming) every data block, without a database.
    Neither checks the SQL text of the definitions: a flipped bit there (`COPX`, a type `uext`,
    an owner `postgrer`) still reads back whole and fails only a real restore, so this is a
    first filter, and the proof is the restore into a new database (`RestoreIntoRecovery`, run
    before maintenance mode). The roles the SQL names are collected from the schema's SQL
    (`--schema-only`, no data read) so the planner can check them against the server.
    Reading a large dump takes a while, so a readable result is remembered for the same file
    (path, size, modification time): checks and plan of one request read it once.
    """
    if not path.exists():
        return ArchiveInfo(False, error=f"{path} does not exist")
    if not os.access(path, os.R_OK):
        return ArchiveInfo(False, error=f"{path} is not readable by the bot")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _READ_WHOLE:
        return _READ_WHOLE[key]
    info = _read_whole(path, timeout=timeout)
    if info.readable:
        if len(_READ_WHOLE) > 256:
            _READ_WHOLE.clear()
        _READ_WHOLE[key] = info
    return info


_READ_WHOLE: dict[tuple[str, int, int], ArchiveInfo] = {}


def _read_whole(path: Path, *, timeout: float) -> ArchiveInfo:
    started = time.monotonic()
    run = run_tool(["pg_restore", "--list", str(path)], conn=None, timeout=timeout)
    if run.returncode != 0:
        return ArchiveInfo(False, error=run.tail() or f"pg_restore exited {run.returncode}")
    found = re.search(r"^;\s+Format: (\w+)", run.stdout, re.MULTILINE)
    entries = sum(1 for line in run.stdout.splitlines() if line and not line.startswith(";"))
    left = max(timeout - (time.monotonic() - started), 1.0)
    whole = run_tool(["pg_restore", "--file=/dev/null", str(path)], conn=None, timeout=left)
    if whole.returncode != 0:
        reason = whole.tail() or f"pg_restore exited {whole.returncode}"
        return ArchiveInfo(
            False,
            found.group(1) if found else None,
            entries,
            f"the archive does not read back whole (truncated or corrupt): {reason}",
        )
    left = max(timeout - (time.monotonic() - started), 1.0)
    schema = run_tool(
        ["pg_restore", "--schema-only", "--file=-", str(path)], conn=None, timeout=left
    )
    return ArchiveInfo(
        True, found.group(1) if found else None, entries, roles=roles_named(schema.stdout)
    )


ROLE_IN_SQL = re.compile(
    r'^(?:ALTER .+ OWNER TO|GRANT .+ TO|REVOKE .+ FROM) ("(?:[^"]|"")+"|[^\s";,]+)'
    r"(?: WITH GRANT OPTION)?;$",
    re.MULTILINE,
)


def roles_named(script: str) -> frozenset[str]:
    """Return the roles pg_dump's SQL makes owners or grantees (PUBLIC is no role)."""
    names = set()
    for match in ROLE_IN_SQL.finditer(script):
        name = match.group(1)
        if name.startswith('"'):
            names.add(name[1:-1].replace('""', '"'))
        elif name.upper() != "PUBLIC":
            names.add(name)
    return frozenset(names)


def missing_roles(pg: psycopg.Connection[Any], roles: frozenset[str]) -> list[str]:
    """Return the roles of `roles` the server does not have, sorted."""
    rows = pg.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (sorted(roles),)
    ).fetchall()
    return sorted(roles - {str(row[0]) for row in rows})


def pg_restore(dump: Path, *, conn: DatabaseConnection, jobs: int, timeout: float) -> ToolRun:
    """Restore `dump` into conn's (new, empty) database; the first error stops it.

    `--exit-on-error` makes any error fatal; with one job the restore is also one transaction
    (`--single-transaction` cannot be combined with `--jobs`), so a failure leaves nothing.
    """
    argv = ["pg_restore", "--no-password", *conn_args(conn), "--exit-on-error"]
    argv += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    run = run_tool([*argv, str(dump)], conn=conn, timeout=timeout, watch=size_of(conn))
    if run.returncode != 0 or "errors ignored on restore" in run.stderr:
        raise PermanentError(
            f"pg_restore of {dump} into {conn.dbname} failed (exit {run.returncode}):\n{run.tail()}"
        )
    return run


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


@dataclass(frozen=True)
class Session:
    """A session the bot ended: who it was and what it was doing."""

    pid: int
    user: str | None
    application: str | None
    state: str | None
    database: str

    def line(self) -> str:
        """Describe the session in one line for the step output."""
        return (
            f"pid {self.pid} · user {self.user} · application {self.application or '-'} · "
            f"{self.state or 'unknown state'} · database {self.database}"
        )


def terminate_sessions(pg: psycopg.Connection[Any], names: Sequence[str]) -> list[Session]:
    """End every other session on the named databases; return the ones that were signalled."""
    # The sessions are chosen first (a materialized CTE), then signalled: in one WHERE clause
    # the planner may call pg_terminate_backend before the other conditions, on every backend.
    rows = pg.execute(
        "WITH chosen AS MATERIALIZED (SELECT pid, usename, application_name, state, datname"
        " FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid())"
        " SELECT pid, usename, application_name, state, datname, pg_terminate_backend(pid)"
        " FROM chosen",
        (list(names),),
    ).fetchall()
    return [Session(*row[:5]) for row in rows if row[5]]


def prepared_transactions(pg: psycopg.Connection[Any], names: Sequence[str]) -> list[str]:
    """Describe the prepared (two-phase) transactions on the named databases.

    They count as users of their database: ALTER DATABASE RENAME and DROP DATABASE refuse
    while one exists (src/backend/commands/dbcommands.c, CountOtherDBBackends), and ending
    sessions does not end them: only COMMIT PREPARED or ROLLBACK PREPARED does.
    """
    rows = pg.execute(
        "SELECT gid, database, owner, prepared FROM pg_prepared_xacts"
        " WHERE database = ANY(%s) ORDER BY prepared",
        (list(names),),
    ).fetchall()
    return [
        f"{gid!r} on {db} by {owner}, prepared {at:%Y-%m-%d %H:%M:%S %Z}"
        for gid, db, owner, at in rows
    ]


def size_of(conn: DatabaseConnection) -> Callable[[], str]:
    """A watch for a restore: how large the database being filled is now."""

    def reading() -> str:
        with connect(conn, timeout=5.0) as pg:
            row = pg.execute("SELECT pg_database_size(current_database())").fetchone()
        return f"{human_size(int(row[0]) if row else 0)} in {conn.dbname} so far"

    return reading


def file_size(path: Path) -> Callable[[], str]:
    """A watch for a dump being written: how large the file is now."""

    def reading() -> str:
        size = path.stat().st_size if path.exists() else 0
        return f"{human_size(size)} written to {path.name}"

    return reading
