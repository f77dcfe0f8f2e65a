"""Progress edits during a 60 s health poll, end to end, on a clock the test moves (issue 15,
point 4): signed payloads against the served app, the real HealthCheck polling a local HTTP
server that answers 503 for 62 virtual seconds, the runner, the outbox's sender and fake
Slack; the progress message is edited with elapsed time, the step's configured timeout and
the last reading, at most once per 10 s of step time."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from sandbox.harness import Sandbox
from sandbox.web import Reply, Request, WebStub
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget
from tests.fakes.thread import card, request_rollback, text_of
from tests.fakes.ticker import FakeTicker
from tests.fakes.waiting import wait_for
from tests.handlers.blockkit import assert_valid_block_kit

LIVE = re.compile(r"_(\d+) s of 120 s · (\d+) readings? · (.*?)_")


class Recovering:
    """A health endpoint that answers 503 until `after` virtual seconds since its first call."""

    def __init__(self, ticker: FakeTicker, *, after: float) -> None:
        self.ticker = ticker
        self.after = after
        self.first: float | None = None
        self.calls = 0

    def __call__(self, _request: Request) -> Reply:
        now = self.ticker.monotonic()
        self.first = now if self.first is None else self.first
        self.calls += 1
        if now - self.first >= self.after:
            return Reply(200, json={"status": "ok"})
        return Reply(503, json={"status": "calls dropping"})


@pytest.fixture
def ticker() -> FakeTicker:
    return FakeTicker()


@pytest.fixture
def poll_world(tmp_path: Path, script: Path, ticker: FakeTicker) -> Iterator[tuple[Sandbox, Any]]:
    with WebStub() as web:
        health = Recovering(ticker, after=62.0)
        web.route("GET", "/health", health)
        raw = config_dict(health_url=f"{web.url}/health")
        raw["environments"]["prod"]["targets"]["app"]["timeouts"] = {"health": "2m"}
        sandbox = Sandbox(
            config=parse_config(raw, path=Path("test.yml")),
            workdir=tmp_path,
            people=PEOPLE,
            planner=Planner(factory=lambda params: ScriptedTarget(script)),
            groups={"SDBAS00001": [DAVE]},
            runner_poll_seconds=0.1,
            ticker=ticker,
        ).start()
        store = sandbox.process.store
        # each poll waits until the sender has delivered what the step queued: every
        # progress edit reaches Slack, however loaded the machine (none superseded)

        def drained() -> None:
            wait_for(lambda: store.outbox.backlog() == 0, what="the outbox to drain", timeout=30)

        ticker.settle = drained
        try:
            yield sandbox, health
        finally:
            sandbox.stop()


def test_a_60_s_health_poll_edits_the_progress_message_every_10_s_with_its_reading(
    poll_world: tuple[Sandbox, Recovering],
) -> None:
    sandbox, health = poll_world
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert "4. Health · _health_ · up to 2 min" in text_of(plan)  # the target's timeouts
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the rollback", timeout=60)
    progress = next(
        m
        for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)
        if m.text.startswith("Rollback progress")
    )
    edits = [
        c.args
        for c in sandbox.slack.calls_to("chat.update")
        if c.ok and c.args.get("ts") == progress.ts
    ]
    live = [
        (int(m.group(1)), int(m.group(2)), m.group(3))
        for args in edits
        for m in [LIVE.search(str(args.get("blocks")))]
        if m is not None
    ]
    seconds = [s for s, _, _ in live]
    assert len(live) >= 5, live  # a minute of polling shows, not one line at +62 s
    assert seconds == sorted(seconds) and seconds[-1] >= 50
    assert all(b - a >= 10 for a, b in itertools.pairwise(seconds))  # rate-limited
    assert all(re.search(r"/health not healthy yet, \d+ attempts: 503 ", line) for *_, line in live)
    attempts = [int(re.findall(r"yet, (\d+) attempts", line)[0]) for *_, line in live]
    assert attempts == sorted(attempts) and attempts[-1] >= 10  # how many polls so far
    assert health.calls >= 10
    final = wait_for(
        lambda: (
            "*Health* succeeded" in text_of(sandbox.slack.message(CHANNEL, progress.ts))
            and text_of(sandbox.slack.message(CHANNEL, progress.ts))
        ),
        what="the progress message to show the health step's result",
    )
    assert re.search(
        r"\*Health\* succeeded \(\d+(\.\d+)?\s?s\) — healthy after 6\d\.\d s", final
    ), final
    assert assert_valid_block_kit(sandbox) > 10
    assert "readings" not in final  # the finished step shows its result, not a stale reading
