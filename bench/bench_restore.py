"""Compare the bot's backup restore with plain pg_restore on the same dump.

Run by hand, never by pytest:

    python bench/bench_restore.py --rows 200000 --jobs 4 --repeat 3
    python bench/bench_restore.py --size 1GB --jobs 2 --repeat 1

It makes a source database of generated rows (`--rows`, or with `--size` as many as make
`pg_database_size` about that size, from a measured sample of 100,000 rows), dumps it once
(custom format), then, for each repeat, times with the SAME job count N on both sides:
plain `pg_restore --jobs N` into a fresh empty database; the bot's restore step alone
(RestoreIntoRecovery: a new recovery database, `--exit-on-error --jobs N`); and the bot's
whole backup method on a copy of the source (reading the dump back whole at plan time; the
stage, before maintenance mode: restore into the recovery database and verification there;
then the pre-rollback pg_dump read back whole, the swap, verification live).
Medians are printed. Every database it makes is called `rbbench_<random>...` and dropped at
the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions.base import StepContext
from actions.database import (
    DatabaseConnection,
    DatabaseParams,
    DatabaseTarget,
    VerificationQuery,
    human_size,
    stamp,
)

SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE events (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts(id),
    kind text NOT NULL, payload text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO accounts SELECT g, 'user' || g || '@example.com', now() - g * interval '1 minute'
    FROM generate_series(1, {accounts}) g;
INSERT INTO events SELECT g, 1 + g % {accounts}, (ARRAY['call', 'sms', 'email'])[1 + g % 3],
    md5(g::text) || md5((g * 7)::text), now() - g * interval '1 second'
    FROM generate_series(1, {rows}) g;
CREATE INDEX events_account ON events (account_id);
CREATE INDEX events_created ON events (created_at);
"""


def database_arguments(
    parser: argparse.ArgumentParser, *, database: str, jobs: int
) -> argparse.ArgumentParser:
    """Add the server, the size of `database` and the bot's pg_restore jobs to `parser`."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the events table")
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help=f"make the {database} about this size (e.g. 1GB, 350MB); overrides --rows",
    )
    parser.add_argument("--jobs", type=int, default=jobs, help="the bot's pg_restore --jobs")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    database_arguments(parser, database="source database", jobs=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the databases and the dump")
    return parser.parse_args(argv)


class Server:
    """The PostgreSQL server the benchmark uses, and the databases it made there."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix = f"rbbench_{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def conn(self, dbname: str) -> DatabaseConnection:
        """Return the bot's connection settings for a database."""
        return DatabaseConnection(
            host=self.args.host, port=self.args.port, user=self.args.user, dbname=dbname
        )

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """Open an autocommit connection."""
        return psycopg.connect(
            host=self.args.host,
            port=self.args.port,
            user=self.args.user,
            dbname=dbname,
            autocommit=True,
        )

    def create(self, suffix: str, *, template: str | None = None) -> str:
        """Create `<prefix>_<suffix>`, optionally as a copy of `template`."""
        name = f"{self.prefix}_{suffix}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.connect() as pg:
            pg.execute(statement)
        self.made.append(name)
        return name

    def drop_all(self) -> None:
        """Drop every database this run made (and their kin)."""
        with self.connect() as pg:
            rows = pg.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (self.prefix,)
            ).fetchall()
            for (name,) in rows:
                pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """Read `1GB`, `350MB`, `2GiB` or a number of bytes."""
    raw = text.strip().upper().replace(" ", "")
    for unit, factor in sorted(UNITS.items(), key=lambda u: -len(u[0])):
        if raw.endswith(unit):
            return int(float(raw[: -len(unit)]) * factor)
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1GB or 350MB")
    return int(raw)


def database_size(server: Server, dbname: str) -> int:
    """Return pg_database_size of a database."""
    with server.connect(dbname) as pg:
        row = pg.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def rows_for(server: Server, size: int, *, sample: int = 100_000) -> int:
    """Fill a sample database, measure what a row costs, return the rows for `size` bytes."""
    empty = server.create("empty")
    probe = server.create("probe")
    fill(server, probe, sample)
    per_row = (database_size(server, probe) - database_size(server, empty)) / sample
    base = database_size(server, empty)
    with server.connect() as pg:
        for name in (probe, empty):
            pg.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    return max(sample, int((size - base) / per_row))


def fill(server: Server, dbname: str, rows: int) -> None:
    """Create the schema and `rows` events in `dbname`."""
    with server.connect(dbname) as pg:
        pg.execute(
            sql.SQL(SCHEMA).format(rows=sql.Literal(rows), accounts=sql.Literal(max(1, rows // 20)))
        )
        pg.execute("VACUUM ANALYZE")


def make_source(server: Server) -> str:
    """Create and fill the source database."""
    if server.args.size is not None:
        server.args.rows = rows_for(server, server.args.size)
    source = server.create("source")
    fill(server, source, server.args.rows)
    return source


def make_dump(server: Server, source: str, directory: Path) -> Path:
    """pg_dump the source in custom format under the bot's backup naming."""
    path = directory / f"{source}_{stamp(datetime.now(UTC))}.dump"
    args = server.args
    subprocess.run(
        [
            "pg_dump",
            "-h",
            args.host,
            "-p",
            str(args.port),
            "-U",
            args.user,
            "-Fc",
            "-f",
            str(path),
            source,
        ],
        check=True,
    )
    return path


def timed(action: Callable[[], object]) -> float:
    """Return how many seconds `action` took."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def plain_restore(server: Server, dbname: str, dump: Path) -> None:
    """Restore by hand: pg_restore --jobs N into an empty database."""
    args = server.args
    subprocess.run(
        [
            "pg_restore",
            "-h",
            args.host,
            "-p",
            str(args.port),
            "-U",
            args.user,
            f"--jobs={args.jobs}",
            "-d",
            dbname,
            str(dump),
        ],
        check=True,
    )


def bot_target(server: Server, dbname: str, backups: Path) -> DatabaseTarget:
    """Build the bot's target for a copy, reading the dump from `backups`."""
    params = DatabaseParams(
        kind="database",
        connection=server.conn(dbname),
        backups=str(backups),
        restore_jobs=server.args.jobs,
        verification=[
            VerificationQuery(name="events", sql="SELECT count(*) AS n FROM events", nonzero=["n"])
        ],
    )
    return DatabaseTarget(params)


def bot_restore(target: DatabaseTarget, dump: Path) -> tuple[float, float]:
    """Run only the bot's restore step (planned beforehand); return (seconds, bytes/s)."""
    step = target.plan(f"backup:{dump}").stage[0]
    assert step.name == "database.restore_into_recovery", step.name
    started = time.perf_counter()
    result = step.run(StepContext.for_test(timeout=3600))
    return time.perf_counter() - started, float(result.data["restore_bytes_per_second"])


def bot_full_plan(target: DatabaseTarget, dump: Path) -> None:
    """Run the bot's whole plan: read-back, restore and verify (stage), pre-rollback backup,
    swap, verify."""
    plan = target.plan(f"backup:{dump}")
    memory: dict[str, Any] = {}
    for step in [*plan.stage, *plan.prepare, *plan.rollback, *plan.verify]:
        step.run(StepContext.for_test(timeout=3600, memory=memory))


def one_round(server: Server, *, source: str, dump: Path, i: int) -> dict[str, float]:
    """Time the three ways once, each on its own fresh copy of the source."""
    plain_db = server.create(f"plain{i}")
    bot_db = server.create(f"bot{i}", template=source)
    full_db = server.create(f"full{i}", template=source)
    backups = dump.parent
    step_seconds, rate = bot_restore(bot_target(server, bot_db, backups), dump)
    times = {
        f"plain pg_restore --jobs {server.args.jobs}": timed(
            lambda: plain_restore(server, plain_db, dump)
        ),
        f"bot restore step (--jobs {server.args.jobs})": step_seconds,
        "bot backup method, whole plan": timed(
            lambda: bot_full_plan(bot_target(server, full_db, backups), dump)
        ),
    }
    return times | {"_rate": rate}


def report(rounds: list[dict[str, float]], *, dump: Path, rows: int) -> str:
    """Format the medians as a plain-text table."""
    size = dump.stat().st_size
    lines = [f"dump: {dump.name}, {human_size(size)}, {rows:,} event rows, {len(rounds)} round(s)"]
    lines.append(f"{'method':<45} {'median s':>9} {'MB/s':>8}")
    for key in (k for k in rounds[0] if not k.startswith("_")):
        seconds = statistics.median(r[key] for r in rounds)
        lines.append(f"{key:<45} {seconds:>9.2f} {size / seconds / 1e6:>8.2f}")
    rate = statistics.median(r["_rate"] for r in rounds)
    lines.append(f"bot's recorded restore_bytes_per_second (median): {rate:,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    server = Server(args)
    workdir = Path(tempfile.mkdtemp(prefix="rbbench_"))
    try:
        source = make_source(server)
        print(
            f"source database {human_size(database_size(server, source))} "
            f"(pg_database_size), {args.rows:,} event rows",
            flush=True,
        )
        dump = make_dump(server, source, workdir)
        rounds = [one_round(server, source=source, dump=dump, i=i) for i in range(args.repeat)]
        print(report(rounds, dump=dump, rows=args.rows))
    finally:
        if not args.keep:
            server.drop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept: databases {server.prefix}_*, files in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
