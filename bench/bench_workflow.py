"""How much the bot itself adds: request, approval and per-step bookkeeping, on both databases.

Run by hand, never by pytest:

    python bench/bench_workflow.py --runs 50 --steps 10

For each database (a SQLite file, and a fresh PostgreSQL database at 127.0.0.1:5432 unless
--no-postgres) it requests, approves and runs `--runs` rollbacks whose plans have `--steps`
steps that do nothing, so every millisecond measured is the bot's own. What each figure
includes:
- request: building the plan (a no-op target) and the incident and run rows;
- approve: the plan check (the plan rebuilt and hashed, as `Flows.approve` does; a real
  target adds its own reads, e.g. Kubernetes) and the approval transaction;
- per step: the lease, two step records and their audit events, the durable memory write,
  and the progress messages queued in the outbox in the same transactions (delivering
  them to Slack happens on the sender thread and is not included: see bench_outbox.py).
It prints medians and the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from actions.base import Check, RollbackPoint, StepContext, StepResult, TargetPlan
from bot.config import parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine, upgrade

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUESTER, APPROVER = "UREQUESTER", "UAPPROVER1"


@dataclass
class Noop:
    """A step that only writes to the run's durable memory."""

    name: str
    idempotent: bool = True
    timeout: float = 5.0

    def describe(self) -> str:
        return f"{self.name}: nothing"

    def run(self, ctx: StepContext) -> StepResult:
        ctx.memory[self.name] = True
        return StepResult(summary="done")


@dataclass
class NoopTarget:
    steps: int

    def points(self) -> list[RollbackPoint]:
        return [RollbackPoint(ref="1", label="rev 1")]

    def checks(self, ref: str | None) -> list[Check]:
        return []

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        return TargetPlan(rollback=[Noop(f"step{i}") for i in range(self.steps)])


def config(targets: int):  # type: ignore[no-untyped-def]
    raw = {
        "environments": {
            "prod": {
                "incident_channel": "C0BENCH",
                "approvers": {"users": [APPROVER]},
                "targets": {
                    f"t{i}": {"kind": "kubernetes", "namespace": "n", "deployment": f"d{i}"}
                    for i in range(targets)
                },
            }
        }
    }
    return parse_config(raw, path=Path("bench.yml"))


def bench(url: str, *, runs: int, steps: int) -> dict[str, float]:
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    cfg = config(runs)
    workflow = Workflow(store=store, config=cfg)
    planner = Planner(factory=lambda params: NoopTarget(steps))
    runner = Runner(
        store=store, workflow=workflow, config=cfg, planner=planner, progress=NullProgress()
    )
    env = cfg.environment("prod")
    requests, approvals, executions = [], [], []
    for i in range(runs):
        started = time.perf_counter()
        plan = planner.build(env_name="prod", env=env, target=f"t{i}", point="1")
        _, run = workflow.request(
            plan=plan,
            requester=REQUESTER,
            severity=Severity.HIGH,
            answers=Answers(functional=False, data_at_risk=True),
        )
        requested = time.perf_counter()
        # As bot.application.flows.Flows.approve: the plan is rebuilt and must hash the same.
        current = planner.build(env_name="prod", env=env, target=f"t{i}", point="1").hash
        workflow.approve(run.id, user=APPROVER, current_plan_hash=current)
        approved = time.perf_counter()
        runner.execute(run.id)
        executed = time.perf_counter()
        requests.append(requested - started)
        approvals.append(approved - requested)
        executions.append((executed - approved) / steps)
    engine.dispose()
    return {
        "request ms": statistics.median(requests) * 1000,
        "approve ms": statistics.median(approvals) * 1000,
        "per step ms": statistics.median(executions) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"sqlite": bench(f"sqlite:///{tmp}/bench.db", runs=args.runs, steps=args.steps)}
    if not args.no_postgres:
        name = f"rbbench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            results["postgres"] = bench(url, runs=args.runs, steps=args.steps)
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    print(f"{args.runs} rollbacks of {args.steps} no-op steps each (medians)")
    for database, figures in results.items():
        shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
        print(f"  {database:9} {shown}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
