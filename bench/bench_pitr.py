"""Compare the bot's point-in-time recovery with the same restore and replay done by hand.

Run by hand, never by pytest (as root it runs PostgreSQL as the `postgres` OS user):

    python bench/bench_pitr.py --size 1GB --jobs 2 --repeat 1
    python bench/bench_pitr.py --rows 1000000 --jobs 2 --repeat 2

It starts a scratch cluster that archives its WAL (tests/fakes/pgcluster.py), fills a
database with `--rows` rows (or, with `--size`, with batches of 250,000 rows until
`pg_database_size` reaches that size), takes a pg_basebackup, then writes a quarter as many
rows again (WAL to replay) and notes the time, then deletes half of the rows. For each
repeat it recovers the database to that time twice, each time into a new database on the
same cluster:

- by hand: `cp -a` the base backup, recovery.signal and recovery_target_time in
  postgresql.auto.conf, `pg_ctl start`, wait for the promotion, then
  `pg_dump -Fc` of the database and `pg_restore --jobs N` into a new database, stop and
  remove the copy;
- the bot: its `database.pitr_restore` step (the same work plus the verification query in
  the scratch instance and `--exit-on-error`), with the same N.

Medians are printed, with the database's size at the base backup and at the end, the WAL
replayed and the free disk space needed (about 5 times `--size`: the cluster, its WAL
archive, the base backup, the scratch copy and the restored database).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from actions.base import StepContext
from actions.database import DatabaseParams, DatabaseTarget, VerificationQuery, human_size
from actions.database.params import DatabaseConnection, WalArchive
from tests.fakes.pgcluster import ArchivedCluster, as_postgres, give_to_postgres


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="fill to this pg_database_size before the base backup (e.g. 1GB, 350MB); "
        "overrides --rows",
    )
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore --jobs on both sides")
    parser.add_argument("--repeat", type=int, default=2)
    return parser.parse_args(argv)


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


def database_size(cluster: ArchivedCluster, db: str) -> int:
    """Return pg_database_size of `db`."""
    with cluster.connect(db) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def insert(cluster: ArchivedCluster, db: str, first: int, last: int) -> None:
    """Insert the rows first..last of the events table."""
    cluster.execute(
        db,
        "INSERT INTO events SELECT g, md5(g::text) || md5((g * 7)::text)"
        f" FROM generate_series({first}, {last}) g",
    )


def fill(cluster: ArchivedCluster, rows: int, size: int | None) -> tuple[str, str, int, int]:
    """Make the database, back it up, write more; return (database, target time, rows, its
    size at the base backup)."""
    db = "bench"
    cluster.execute("postgres", f"CREATE DATABASE {db}")
    cluster.execute(
        db,
        "CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL);"
        "CREATE INDEX ON events (payload)",
    )
    if size is None:
        insert(cluster, db, 1, rows)
    else:
        rows, batch = 0, 250_000
        while database_size(cluster, db) < size:
            insert(cluster, db, rows + 1, rows + batch)
            rows += batch
    cluster.execute(db, "VACUUM ANALYZE events")
    backed_up = database_size(cluster, db)
    cluster.switch_wal()
    cluster.base_backup()
    cluster.execute(
        db,
        f"INSERT INTO events SELECT g, md5(g::text) FROM generate_series({rows + 1},"
        f" {rows + rows // 4}) g",
    )
    time.sleep(1.1)
    with cluster.connect(db) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    time.sleep(1.1)
    cluster.execute(db, "DELETE FROM events WHERE id % 2 = 0")
    cluster.switch_wal()
    return db, row[0].isoformat(), rows, backed_up


def by_hand(cluster: ArchivedCluster, db: str, moment: str, jobs: int, n: int) -> float:
    """Restore and replay by hand, copy the database over; return the seconds taken."""
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="rbbench_pitr_"))
    root.chmod(0o755)
    give_to_postgres(root)
    data = root / "data"
    as_postgres(["cp", "-a", str(cluster.base / "1"), str(data)])
    (data / "recovery.signal").write_text("")
    with (data / "postgresql.auto.conf").open("a") as out:
        out.write(
            f"restore_command = 'cp {cluster.archive}/%f %p'\n"
            f"recovery_target_time = '{moment}'\nrecovery_target_action = 'promote'\n"
            f"port = {cluster.port + 1}\nlisten_addresses = ''\n"
            f"unix_socket_directories = '{root}'\narchive_mode = off\n"
        )
    give_to_postgres(root)
    pg_ctl = str(cluster.bin / "pg_ctl")
    as_postgres([pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start"])
    try:
        while True:
            try:
                with psycopg.connect(host=str(root), port=cluster.port + 1, user="postgres") as c:
                    row = c.execute("SELECT pg_is_in_recovery()").fetchone()
                if row and row[0] is False:
                    break
            except psycopg.OperationalError:
                pass
            time.sleep(0.1)
        copy = root / "copy.dump"
        subprocess.run(
            [
                "pg_dump",
                "-h",
                str(root),
                "-p",
                str(cluster.port + 1),
                "-U",
                "postgres",
                "-Fc",
                "-f",
                str(copy),
                db,
            ],
            check=True,
        )
        cluster.execute("postgres", f"CREATE DATABASE hand{n}")
        subprocess.run(
            [
                "pg_restore",
                "-h",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                f"--jobs={jobs}",
                "-d",
                f"hand{n}",
                str(copy),
            ],
            check=True,
        )
    finally:
        as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - started
    cluster.execute("postgres", f"DROP DATABASE hand{n}")
    return seconds


def by_bot(cluster: ArchivedCluster, db: str, moment: str, jobs: int) -> float:
    """Run the bot's PITR restore step; return the seconds taken."""
    params = DatabaseParams(
        kind="database",
        connection=DatabaseConnection(host="127.0.0.1", port=cluster.port, dbname=db),
        methods=["pitr"],
        archive=WalArchive(base_backups=str(cluster.base), wal_archive=str(cluster.archive)),
        restore_jobs=jobs,
        verification=[VerificationQuery(name="n", sql="SELECT count(*) AS n FROM events")],
    )
    # the stage runs before maintenance mode: the restore into <db>_recovery, then its check
    step = DatabaseTarget(params).plan(f"pitr:{moment}").stage[0]
    assert step.name == "database.pitr_restore", step.name
    started = time.perf_counter()
    step.run(StepContext.for_test(timeout=7200, memory={}))
    seconds = time.perf_counter() - started
    cluster.execute("postgres", f"DROP DATABASE {db}_recovery")
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    cluster = ArchivedCluster()
    try:
        cluster.start()
        free = shutil.disk_usage(cluster.root).free
        wanted = 5 * (args.size or args.rows * 350)
        if free < wanted:
            print(f"only {human_size(free)} free, about {human_size(wanted)} needed; not run")
            return 1
        started = time.perf_counter()
        db, moment, rows, backed_up = fill(cluster, args.rows, args.size)
        filled = time.perf_counter() - started
        with cluster.connect(db) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        size = int(row[0]) if row else 0
        base = sum(f.stat().st_size for f in (cluster.base / "1").rglob("*") if f.is_file())
        after = sum(
            f.stat().st_size
            for f in cluster.archive.iterdir()
            if f.is_file() and f.stat().st_mtime >= (cluster.base / "1").stat().st_mtime
        )
        replay = sum(f.stat().st_size for f in cluster.archive.iterdir() if f.is_file())
        print(
            f"{rows:,} rows; database {human_size(backed_up)} at the base backup "
            f"(pg_database_size), {human_size(size)} at the end; base backup directory "
            f"{human_size(base)} (whole cluster); WAL archive {human_size(replay)}, of it "
            f"{human_size(after)} archived after the base backup (replayed up to the target); "
            f"filled in {filled:.0f} s",
            flush=True,
        )
        rounds: list[dict[str, Any]] = []
        for n in range(args.repeat):
            hand = by_hand(cluster, db, moment, args.jobs, n)
            print(f"round {n + 1}: by hand {hand:.1f} s", flush=True)
            bot = by_bot(cluster, db, moment, args.jobs)
            print(f"round {n + 1}: bot {bot:.1f} s", flush=True)
            rounds.append(
                {
                    f"by hand: cp + replay + pg_dump | pg_restore --jobs {args.jobs}": hand,
                    f"bot: database.pitr_restore (--jobs {args.jobs})": bot,
                }
            )
        print(f"{len(rounds)} round(s), medians:")
        for key in rounds[0]:
            print(f"{key:<60} {statistics.median(r[key] for r in rounds):>8.1f} s")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
