"""A rollback does not wait on Slack: a 10-step run with Slack normal vs stalling on every call.

Run by hand, never by pytest:

    python bench/bench_outbox.py --steps 10 --stall 2 --step-seconds 0.1

It opens an incident thread in the sandbox's fake Slack Web API, approves a run of
`--steps` steps that each take `--step-seconds`, and runs it with the outbox's sender
delivering beside the runner, first with Slack answering at once, then with Slack
stalling `--stall` seconds before every answer. It prints how long the rollback took
and how long until the last message was in the thread, and how many Web API calls
that took.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from slack_sdk import WebClient

from actions.base import Check, RollbackPoint, StepContext, StepResult, TargetPlan
from actions.http import read_metrics
from bot.app import wire
from bot.config import parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.outbox import Sender
from bot.execution.planner import Planner
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine, upgrade
from handlers.outbox import SlackOutbox
from handlers.progress import SlackProgress
from handlers.thread import IncidentThread
from sandbox.slack import FakeSlack

CHANNEL = "C0BENCH"
REQUESTER, APPROVER = "UREQUESTER", "UAPPROVER1"


@dataclass
class Work:
    """A step that takes `seconds` and says what it did."""

    name: str
    seconds: float
    idempotent: bool = True
    timeout: float = 60.0

    def describe(self) -> str:
        return f"{self.name}: work for {self.seconds:g} s"

    def spec(self) -> dict[str, float]:
        return {"seconds": self.seconds}

    def run(self, ctx: StepContext) -> StepResult:
        time.sleep(self.seconds)
        return StepResult(summary="done", output=f"{self.name} output")


@dataclass
class WorkTarget:
    steps: int
    seconds: float

    def points(self) -> list[RollbackPoint]:
        return [RollbackPoint(ref="1", label="rev 1")]

    def checks(self, ref: str | None) -> list[Check]:
        return []

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        return TargetPlan(rollback=[Work(f"step{i}", self.seconds) for i in range(self.steps)])


def one_run(*, steps: int, step_seconds: float, stall: float) -> dict[str, float]:
    raw = {
        "environments": {
            "prod": {
                "incident_channel": CHANNEL,
                "approvers": {"users": [APPROVER]},
                "targets": {"app": {"kind": "kubernetes", "namespace": "n", "deployment": "d"}},
            }
        }
    }
    config = parse_config(raw, path=Path("bench.yml"))
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as slack:
        slack.add_channel("bench", channel_id=CHANNEL)
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        store = Store(engine)
        workflow = Workflow(store=store, config=config)
        planner = Planner(factory=lambda params: WorkTarget(steps, step_seconds))
        deps = wire(
            store,
            config=config,
            workflow=workflow,
            planner=planner,
            client=WebClient(token=slack.token, base_url=slack.url, timeout=60),
            metrics_reader=read_metrics,
        )
        plan = planner.build(
            env_name="prod", env=config.environment("prod"), target="app", point="1"
        )
        incident, run = workflow.request(
            plan=plan,
            requester=REQUESTER,
            severity=Severity.HIGH,
            answers=Answers(functional=False),
        )
        IncidentThread(deps).open(incident, run)
        workflow.approve(run.id, user=APPROVER)
        sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
        runner = Runner(
            store=store,
            workflow=workflow,
            config=config,
            planner=planner,
            progress=SlackProgress(sender.wake),
        )
        calls_before = len(slack.calls)
        if stall:
            for method in ("chat.update", "chat.postMessage", "files.getUploadURLExternal"):
                slack.stall_next(method, seconds=stall, times=10_000)
        stop = threading.Event()
        thread = threading.Thread(target=sender.serve, args=(stop,), kwargs={"poll_seconds": 0.05})
        started = time.perf_counter()
        thread.start()
        runner.execute(run.id)
        ran = time.perf_counter() - started
        deadline = time.monotonic() + 3600
        while store.outbox.heads() and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered = time.perf_counter() - started
        stop.set()
        sender.wake.set()
        thread.join(timeout=120)
        final = store.runs.get(run.id)
        assert final is not None and final.state == "succeeded", final and final.outcome
        engine.dispose()
        return {
            "rollback s": ran,
            "last message s": delivered,
            "Slack calls": float(len(slack.calls) - calls_before),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--stall", type=float, default=2.0)
    parser.add_argument("--step-seconds", type=float, default=0.1)
    args = parser.parse_args()
    print(f"a rollback of {args.steps} steps of {args.step_seconds:g} s each")
    for label, stall in (
        ("Slack normal", 0.0),
        (f"Slack stalls {args.stall:g} s/call", args.stall),
    ):
        figures = one_run(steps=args.steps, step_seconds=args.step_seconds, stall=stall)
        shown = ", ".join(
            f"{k} {v:.2f}" if k.endswith(" s") else f"{k} {v:.0f}" for k, v in figures.items()
        )
        print(f"  {label:22} {shown}")


if __name__ == "__main__":
    main()
