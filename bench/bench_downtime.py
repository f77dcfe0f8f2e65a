"""Downtime of a database rollback: the bot's staged restore against the procedures' Method 2.

Run by hand, never by pytest:

    python bench/bench_downtime.py --size 1GB
    python bench/bench_downtime.py --rows 100000          # a small size, under a minute

It makes a live database of generated rows (bench_restore's schema: accounts, events, two
indexes; `--rows`, or with `--size` as many as make `pg_database_size` about that size),
dumps it (custom format: the backup to roll back to), then damages it (a bad deploy: a
tenth of the events deleted, the accounts' e-mails rewritten). Two copies of the damaged
database are made (CREATE DATABASE ... TEMPLATE) and each is rolled back to the dump, in
the same run, on the same server:

- by hand, the procedures' Method 2 (rollback-procedures.md, "Backup Restoration") with its
  own commands: `pg_dump --format=custom` of the current state (the pre-rollback backup),
  then `pg_restore --clean --if-exists --verbose` of the dump into the live database (the
  drop-and-restore). All of it runs with the site in maintenance mode: its downtime is its
  total time;
- the bot: DatabaseTarget's plan for `backup:<dump>` (planning reads the dump back whole),
  its steps run in the planner's phase order with one StepContext as the runner would:
  `stage` (restore into `<db>_recovery`, verification there) before maintenance mode goes
  on; then `prepare` (nothing, for a swap), `rollback` (the swap) and `verify` (the
  verification queries on the live database) inside the maintenance window; then `keep`
  (the pg_dump of the database the swap set aside, read back whole) with the site up again.
  The environment's own steps (maintenance on/off over HTTP, the health check) are not run:
  they are the same on both sides and take milliseconds.

Each step's start and end are printed, then the downtime (the maintenance window) and total
times of both, and the ratios the issue sets as goals (downtime at most a fifth of Method
2's, total at most 1.5 times). Every database it makes is `rbbench_<random>_*`, dropped at
the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_restore import (
    Server,
    bot_target,
    database_arguments,
    database_size,
    make_dump,
    rows_for,
)
from bench_restore import fill as fill_events

from actions.base import StepContext
from actions.database import human_size

DAMAGE = """
DELETE FROM events WHERE id % 10 = 3;
UPDATE accounts SET email = 'broken-' || id || '@example.com' WHERE id % 2 = 0;
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    database_arguments(parser, database="live database", jobs=2)
    parser.add_argument("--keep", action="store_true", help="keep the databases and the dumps")
    return parser.parse_args(argv)


@dataclass
class Timeline:
    """Steps' start and end, in seconds since the rollback began."""

    began: float = field(default_factory=time.perf_counter)
    steps: list[tuple[str, str, float, float]] = field(default_factory=list)

    def run(self, phase: str, name: str, action: Any) -> None:
        """Run `action()` and record it."""
        start = time.perf_counter() - self.began
        action()
        self.steps.append((phase, name, start, time.perf_counter() - self.began))

    def span(self, *phases: str) -> float:
        """Seconds from the first step of `phases` starting to the last one ending."""
        chosen = [s for s in self.steps if s[0] in phases]
        return max(s[3] for s in chosen) - min(s[2] for s in chosen)

    @property
    def total(self) -> float:
        """Seconds from the beginning to the last step's end."""
        return max(s[3] for s in self.steps)

    def lines(self, title: str) -> list[str]:
        """The timeline as text."""
        out = [title]
        out += [
            f"  {start:8.2f} {end:8.2f}  {phase:<12} {name}"
            for phase, name, start, end in self.steps
        ]
        return out


def tool(args: argparse.Namespace, program: str, *rest: str) -> None:
    """Run pg_dump or pg_restore against the server, quietly (Method 2 asks for --verbose)."""
    base = [program, "-h", args.host, "-p", str(args.port), "-U", args.user]
    done = subprocess.run([*base, *rest], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-20:])
        raise SystemExit(f"{program} failed ({done.returncode}):\n{tail}")


def method_two(server: Server, live: str, dump: Path, workdir: Path) -> Timeline:
    """The procedures' Method 2, all of it in maintenance mode."""
    args, line = server.args, Timeline()
    pre = workdir / f"pre_rollback_{live}.sql"
    line.run(
        "maintenance",
        "pg_dump --format=custom (pre-rollback backup)",
        lambda: tool(args, "pg_dump", f"--dbname={live}", "--format=custom", f"--file={pre}"),
    )
    line.run(
        "maintenance",
        "pg_restore --clean --if-exists --verbose",
        lambda: tool(
            args, "pg_restore", f"--dbname={live}", "--clean", "--if-exists", "--verbose", str(dump)
        ),
    )
    return line


def bot(server: Server, live: str, dump: Path) -> Timeline:
    """The bot's plan for `backup:<dump>`, its phases in the runner's order."""
    line = Timeline()
    target = bot_target(server, live, dump.parent)
    plans: list[Any] = []
    line.run(
        "plan",
        "plan (reads the dump back whole)",
        lambda: plans.append(target.plan(f"backup:{dump}")),
    )
    plan = plans[0]
    memory: dict[str, Any] = {}
    for phase, steps in (
        ("stage", plan.stage),
        ("maintenance", [*plan.prepare, *plan.rollback, *plan.verify]),
        ("keep", plan.keep),
    ):
        for step in steps:
            line.run(
                phase,
                step.name,
                lambda s=step: s.run(StepContext.for_test(timeout=7200, memory=memory)),
            )
    return line


def count(server: Server, dbname: str) -> tuple[int, int]:
    """(events, broken e-mails) in a database: the rollback's result, checked on both sides."""
    with server.connect(dbname) as pg:
        events = pg.execute("SELECT count(*) FROM events").fetchone()
        broken = pg.execute("SELECT count(*) FROM accounts WHERE email LIKE 'broken-%'").fetchone()
    assert events is not None and broken is not None
    return int(events[0]), int(broken[0])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    server = Server(args)
    workdir = Path(tempfile.mkdtemp(prefix="rbbench_downtime_"))
    try:
        wanted = 6 * (args.size or args.rows * 250)
        free = shutil.disk_usage(workdir).free
        if free < wanted:
            print(f"only {human_size(free)} free, about {human_size(wanted)} needed; not run")
            return 1
        started = time.perf_counter()
        if args.size is not None:
            args.rows = rows_for(server, args.size)
        live = server.create("live")
        fill_events(server, live, args.rows)
        size = database_size(server, live)
        dump = make_dump(server, live, workdir)
        expected = count(server, live)
        with server.connect(live) as pg:
            pg.execute(DAMAGE)
        hand_db = server.create("hand", template=live)
        bot_db = server.create("bot", template=live)
        print(
            f"live database {human_size(size)} (pg_database_size), {args.rows:,} event rows; "
            f"dump {human_size(dump.stat().st_size)}; prepared in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        hand = method_two(server, hand_db, dump, workdir)
        print("\n".join(hand.lines("Method 2 by hand (s from its start):")), flush=True)
        ours = bot(server, bot_db, dump)
        print("\n".join(ours.lines(f"bot, pg_restore --jobs {args.jobs} (s from its start):")))
        for name, db in (("Method 2", hand_db), ("bot", bot_db)):
            if count(server, db) != expected:
                print(f"{name} did not restore the dump: {count(server, db)} != {expected}")
                return 1
        down_hand, down_bot = hand.span("maintenance"), ours.span("maintenance")
        print(f"{'':<10} {'downtime s':>11} {'total s':>9}")
        print(f"{'Method 2':<10} {down_hand:>11.2f} {hand.total:>9.2f}")
        print(f"{'bot':<10} {down_bot:>11.2f} {ours.total:>9.2f}")
        print(
            f"bot/Method 2: downtime {down_bot / down_hand:.2f} (goal <= 0.20), "
            f"total {ours.total / hand.total:.2f} (goal <= 1.50)"
        )
    finally:
        if not args.keep:
            server.drop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept: databases {server.prefix}_*, files in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
