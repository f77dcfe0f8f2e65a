"""Real PostgreSQL at 127.0.0.1:5432 for database tests: unique databases, dropped afterwards.

Every database a test makes is called `rbt_<random>`; at teardown every database whose name
starts with it is dropped (WITH (FORCE)), which also removes the `<name>_recovery` and
`<name>_pre_rollback_<ts>` databases the rollback steps create. Nothing else on the shared
server is touched.

Test modules load this as a plugin (`pytest_plugins = ["tests.fakes.pg"]`) and also import
its helpers; it holds no asserts, so it opts out of assertion rewriting: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from actions.base import Action, StepContext, StepResult, TargetPlan, TemporaryError
from actions.database import DatabaseConnection, DatabaseParams, stamp
from tests.fakes.database import drop_now

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"

VOXFLOW_SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL,
    is_active boolean NOT NULL DEFAULT true, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE agents (id serial PRIMARY KEY, user_id int REFERENCES users(id), name text,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE campaigns (id serial PRIMARY KEY, user_id int REFERENCES users(id), status text,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE user_usage_tracking (id serial PRIMARY KEY, user_id int REFERENCES users(id),
    date date NOT NULL DEFAULT current_date, total_tokens bigint NOT NULL);
CREATE TABLE user_api_keys (id serial PRIMARY KEY, user_id int REFERENCES users(id),
    key_hash text NOT NULL, is_active boolean NOT NULL DEFAULT true);
CREATE TABLE schema_migrations (version text PRIMARY KEY);
INSERT INTO users (email) VALUES ('a@example.com'), ('b@example.com'), ('c@example.com');
INSERT INTO agents (user_id, name) VALUES (1, 'support'), (2, 'sales');
INSERT INTO campaigns (user_id, status) VALUES (1, 'active'), (2, 'paused');
INSERT INTO user_usage_tracking (user_id, total_tokens) VALUES (1, 1200), (2, 300);
INSERT INTO user_api_keys (user_id, key_hash) VALUES (1, 'sk-SECRET-KEY-VALUE-1');
INSERT INTO schema_migrations VALUES ('001');
"""


def connection(dbname: str, **overrides: Any) -> DatabaseConnection:
    """Return the DatabaseConnection of a test database."""
    return DatabaseConnection(host=HOST, port=PORT, user=USER, dbname=dbname, **overrides)


def params(dbname: str, **overrides: Any) -> DatabaseParams:
    """Return DatabaseParams for a test database (short timeouts)."""
    overrides.setdefault("restore_timeout", 60.0)
    overrides.setdefault("swap_timeout", 20.0)
    return DatabaseParams(kind="database", connection=connection(dbname), **overrides)


def pg(dbname: str = "postgres") -> psycopg.Connection[Any]:
    """Open an autocommit connection to a database on the test server."""
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=dbname, autocommit=True)


def execute(dbname: str, statement: str) -> None:
    """Run SQL (possibly several statements) in a database."""
    with pg(dbname) as conn:
        conn.execute(statement.encode())


def scalar(dbname: str, query: str) -> Any:
    """Return the first column of the first row of a query."""
    with pg(dbname) as conn:
        row = conn.execute(query.encode()).fetchone()
    return row[0] if row else None


def exists(dbname: str) -> bool:
    """Say whether a database exists on the test server."""
    with pg() as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        return found.fetchone() is not None


def dump(dbname: str, directory: Path, taken_at: datetime, *, prefix: str = "") -> Path:
    """pg_dump a database in custom format as `<prefix><db>_<ts>.dump`."""
    path = directory / f"{prefix}{dbname}_{stamp(taken_at)}.dump"
    subprocess.run(
        ["pg_dump", "-h", HOST, "-p", str(PORT), "-U", USER, "-Fc", "-f", str(path), dbname],
        check=True,
        capture_output=True,
    )
    return path


def _drop_family(name: str) -> None:
    with pg() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (name,)
        ).fetchall()
    for (datname,) in rows:
        drop_now(datname)  # now: a role fixture's teardown drops the owner of these next


@pytest.fixture
def make_db() -> Iterator[Callable[[], str]]:
    """Yield a factory of empty uniquely named databases; drop them and their kin afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"rbt_{uuid.uuid4().hex[:12]}"
        with pg() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    for name in made:
        _drop_family(name)


@pytest.fixture
def voxflow_db(make_db: Callable[[], str]) -> str:
    """Create a database with a small VoxFlow-like schema and data; return its name."""
    name = make_db()
    execute(name, VOXFLOW_SCHEMA)
    return name


@pytest.fixture
def big_db(voxflow_db: str) -> str:
    """Give the VoxFlow database 20,000 users, so a dump has many compressed data blocks."""
    execute(
        voxflow_db,
        "INSERT INTO users (email) SELECT 'u' || g || '@example.com'"
        " FROM generate_series(4, 20000) g",
    )
    return voxflow_db


def damaged(path: Path, how: str) -> Path:
    """Write a damaged copy of a dump next to it (dated 2026-01-01 00:00:00): `truncated_N`
    keeps the first N %, `flipped_N` inverts the byte at N %, and a name of `TOC_FLIPS`
    flips one bit in the table of contents where it still parses (see there)."""
    data = path.read_bytes()
    if how.startswith("truncated"):
        data = data[: len(data) * int(how.split("_")[1]) // 100]
    elif how.startswith("flipped"):
        flipped = bytearray(data)
        flipped[len(data) * int(how.split("_")[1]) // 100] ^= 0xFF
        data = bytes(flipped)
    else:
        anchor, index, after = TOC_FLIPS[how]
        at = data.find(anchor, data.find(after) if after else 0)
        if at < 0:
            raise ValueError(f"{anchor!r} is not in {path}")
        flipped = bytearray(data)
        flipped[at + index] ^= 0x01
        data = bytes(flipped)
    copy = path.with_name(path.name.replace(stamp_of(path), "20260101_000000"))
    copy.write_bytes(data)
    return copy


def stamp_of(path: Path) -> str:
    """Return the `YYYYmmdd_HHMMSS` part of a dump's name."""
    return "_".join(path.stem.split("_")[-2:])


TOC_FLIPS: dict[str, tuple[bytes, int, bytes | None]] = {
    "copy_statement": (b"COPY public.users (", 3, None),
    "column_type": (b"status text,", 7, None),
    "sequence_definition": (b"INCREMENT BY 1", 5, None),
    "table_owner": (b"postgres\x00\x05\x00\x00\x00false", 7, b"CREATE TABLE public.users ("),
    "copy_column": (b"user_id, status", 5, None),
    "foreign_key": (b"REFERENCES public.users(id)", 12, None),
}
"""One-bit flips in a custom-format dump of the VoxFlow schema (anchor, offset in it, search
from): found by flipping every 7th byte of the header and table of contents of such a dump on
PostgreSQL 15; each still passes `pg_restore --list` and `pg_restore --file=/dev/null` (the
text of a definition is not checked by either) but fails a real restore: `COPX public.users`,
type `uext`, `INCRELENT BY`, owner role `postgrer`, column `user_hd`, schema `ptblic`. The
planner refuses the owner flip itself (it checks the roles a dump names against the server);
the others only the restore into a new database catches."""


RESTORE_ONLY_FLIPS = [name for name in TOC_FLIPS if name != "table_owner"]
"""The flips that pass every plan-time check and fail only the restore itself."""


@pytest.fixture
def pg_role() -> Iterator[str]:
    """Create a uniquely named role; drop it afterwards."""
    name = f"rbt_role_{uuid.uuid4().hex[:10]}"
    with pg() as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    yield name
    with pg() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def run_step(
    action: Action, memory: MutableMapping[str, Any], *, timeout: float = 30.0
) -> StepResult:
    """Run one step as the runner would: retry TemporaryError until the deadline."""
    ctx = StepContext.for_test(timeout=min(timeout, action.timeout), memory=memory)
    while True:
        try:
            return action.run(ctx)
        except TemporaryError as error:
            if ctx.remaining() <= 0:
                raise
            time.sleep(min(error.delay, ctx.remaining()))


def run_plan(plan: TargetPlan, memory: MutableMapping[str, Any] | None = None) -> list[StepResult]:
    """Run stage, prepare, rollback, verify and keep in order with one shared memory."""
    shared: MutableMapping[str, Any] = {} if memory is None else memory
    steps = [*plan.stage, *plan.prepare, *plan.rollback, *plan.verify, *plan.keep]
    return [run_step(step, shared) for step in steps]
