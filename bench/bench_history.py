"""Does the bot stay flat as history grows? The queries behind each command and click,
on a near-empty database and on one with `--runs` past rollbacks.

Run by hand, never by pytest:

    python bench/bench_history.py --runs 100000 --repeat 200

For SQLite (a file) and PostgreSQL (a fresh database at 127.0.0.1:5432 unless
--no-postgres) it times, median over `--repeat` calls, the `Store` calls each
entry point makes (what the figure includes):
- `/rollback status`: the active runs (`runs(states=ACTIVE_STATES)`);
- `/rollback history app prod`: the 20 newest runs of the target and their approvals;
- checklist tick: its run by the message's (channel, ts);
- new incident: the id allocation and the insert with its event (`create_incident`);
- restore rate: the newest restore rates, for the plan's estimate (`step_values`);
- runner pass: claimable runs and runs due for expiry.
It does not include Slack or the HTTP server (see bench_ack.py for those).
The past runs are finished, so the active set stays small, as in production.
The baseline is not quite empty: `--baseline` (200) past runs, just enough that
every page (20 runs of a target, 200 steps for the rate) is full, so both
columns return the same rows and only the history around them differs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bot.domain.states import ACTIVE_STATES
from bot.persistence.store import Store, make_engine, upgrade
from sandbox.history import fill_history

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def calls(store: Store) -> dict[str, Callable[[], Any]]:
    def history() -> None:
        for run in store.runs.find(environment="prod", target="app", limit=20):
            store.approvals.of(run, since=run.created_at)

    return {
        "/rollback status": lambda: store.runs.find(states=ACTIVE_STATES),
        "/rollback history": history,
        "checklist tick: find the run": lambda: store.posts.run_of(
            channel="C0PAST0001", ts="1600000500.000300"
        ),
        "new incident": lambda: store.incidents.create(
            environment="prod", target="app", severity="high", opened_by="UBENCH0001"
        ),
        "restore rate": lambda: store.steps.values("restore_bytes_per_second"),
        "runner pass": lambda: (store.leases.claimable(), store.runs.due_for_expiry()),
    }


def measure(url: str, *, past: int, repeat: int) -> dict[str, float]:
    engine = make_engine(url)
    upgrade(engine)
    if past:
        fill_history(engine, count=past, until=datetime.now(UTC))
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
    store = Store(engine)
    results = {}
    for name, call in calls(store).items():
        call()  # warm the statement cache
        took = []
        for _ in range(repeat):
            began = time.perf_counter()
            call()
            took.append(time.perf_counter() - began)
        results[name] = statistics.median(took) * 1000
    engine.dispose()
    return results


@contextmanager
def postgres() -> Iterator[str]:
    name = f"rbt_bench_{int(time.time())}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="past runs to fill")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=200, help="past runs in the baseline")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    databases = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    print(
        f"median ms per call over {args.repeat} calls; "
        f"{args.baseline:,} vs {args.runs:,} past runs\n"
    )
    print(f"| database | call | {args.baseline:,} runs | {args.runs:,} runs | ratio |")
    print("|---|---|---|---|---|")
    for database in databases:
        figures = []
        for past in (args.baseline, args.runs):
            if database == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{Path(tmp) / 'bot.db'}"
                    figures.append(measure(url, past=past, repeat=args.repeat))
            else:
                with postgres() as url:
                    figures.append(measure(url, past=past, repeat=args.repeat))
        empty, full = figures
        for name in empty:
            ratio = full[name] / empty[name] if empty[name] else float("nan")
            print(f"| {database} | {name} | {empty[name]:.2f} | {full[name]:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
