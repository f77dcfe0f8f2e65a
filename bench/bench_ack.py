"""How fast the bot acks Slack under load, next to a bare Bolt app on the same server.

Run by hand, never by pytest:

    python bench/bench_ack.py --requests 200

Three apps are served by `bot.server.HttpServer` with the same limits
(`http_limits` of default settings: 8 threads), each on its own port:
- **bot**: the whole bot as in the demo (`rollback-bot demo`): fake Slack, the
  fake Kubernetes API server with the demo's Deployment, a SQLite file, the
  bot's WSGI entry (signature check, secret masking, Bolt, every listener).
- **bare**: a Bolt app whose `/rollback` and Approve listeners only `ack()`,
  behind Bolt's own signature check, with Bolt's default
  `process_before_response=False` (the listener runs on Bolt's executor and
  the HTTP thread polls every 10 ms for its ack);
- **bare inline**: the same with `process_before_response=True`, as the bot
  runs (its listeners ack and hand their work to its own pool), so the
  listener runs on the HTTP thread and the answer leaves when it returns.

Every request is signed as Slack signs it. For each app, kind and
concurrency (1, 10, 50 client threads, each with its own keep-alive
connection) it sends `--requests` requests and reports the time from
sending to the HTTP answer (the ack) at p50 and p99, and the ratio of the
bot's p99 to the bare app's. A cell is sent in `--rounds` rounds that
alternate bot and bare, so a change in the machine's load while the bench
runs (other processes on a shared machine) reaches both alike; the load
average before and after is printed with the table:
- `/rollback app prod`, each with a new trigger id: the bot acks, then opens
  the modal and reads the Deployment on its work pool (that work competes for
  the same two cores and the GIL, and is included in the load, not in the ack);
- Approve on one plan message by the two demo people in turn: Bob's first
  click is applied, every other is a repeat or a refusal the bot answers
  ephemerally after the ack.
Before the cells, `--warmup` requests of each kind go to each app and are not
counted: the bot's first form imports the Kubernetes client and the target
modules (about a second of CPU, once per process), which is start-up, not an
ack. Between cells the bench waits until the bot's work pool is idle. Then it
fires a burst of 100 simultaneous `/rollback app prod` (100 threads, a new
connection each) at each app and counts the requests lost (no HTTP 200).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.app import http_limits
from bot.demo import ALICE, BOB, CHANNEL, demo_world
from bot.sandbox.harness import Sandbox
from bot.sandbox.platform import Person, Platform, sign
from bot.server import HttpServer
from bot.settings import Settings

ANSWERS = {
    "severity": "high",
    "q_functional": "no",
    "q_data_at_risk": "no",
    "q_severe_impact": "yes",
}
SECRET = "bench-signing-secret-0123456789ab"


@dataclass
class Target:
    """One app under test: where to post, how to sign, and how to tell it is idle."""

    name: str
    url: str
    secret: str
    command: Callable[[], bytes]
    approve: Callable[[], bytes]
    idle: Callable[[], bool]
    refused: Callable[[], int] = lambda: 0
    """How many requests the app answered "busy" so far (its work pool was full)."""


def _post(client: httpx.Client, target: Target, body: bytes) -> float | None:
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(target.secret, stamp, body),
    }
    began = time.perf_counter()
    try:
        response = client.post(target.url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError:
        return None
    took = time.perf_counter() - began
    return took if response.status_code == 200 else None


def cell(target: Target, body: Callable[[], bytes], *, clients: int, requests: int) -> list[float]:
    """Latencies of `requests` requests sent by `clients` threads; lost ones are left out."""
    per_client = max(1, requests // clients)

    def one_client() -> list[float | None]:
        with httpx.Client() as client:
            return [_post(client, target, body()) for _ in range(per_client)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [t for f in [pool.submit(one_client) for _ in range(clients)] for t in f.result()]
    _wait_idle(target)
    return [t for t in results if t is not None]


def burst(target: Target, *, size: int = 100) -> int:
    """Send `size` requests at once, each on a new connection; return how many were lost."""
    start = threading.Barrier(size)

    def one() -> bool:
        body = target.command()
        start.wait()
        with httpx.Client() as client:
            return _post(client, target, body) is not None

    with ThreadPoolExecutor(max_workers=size) as pool:
        answered = sum(f.result() for f in [pool.submit(one) for _ in range(size)])
    _wait_idle(target)
    return size - answered


def _wait_idle(target: Target) -> None:
    deadline = time.monotonic() + 300
    while not target.idle() and time.monotonic() < deadline:
        time.sleep(0.1)


def _command_body(person: Person) -> Callable[[], bytes]:
    def body() -> bytes:
        person.last_trigger = None
        fields = {
            "team_id": person.platform.team_id,
            "channel_id": CHANNEL,
            "user_id": person.user_id,
            "user_name": person.name,
            "command": "/rollback",
            "text": "app prod",
            "api_app_id": "A0SANDBOX",
            "response_url": f"{person.platform.slack.base}/commands/response",
            "trigger_id": f"{time.time()}.{os.urandom(8).hex()}",
        }
        return urlencode(fields).encode()

    return body


def _approve_body(people: list[Person], channel: str, ts: str) -> Callable[[], bytes]:
    payloads = [p.click_payload(channel, ts, "approve_run") for p in people]
    turn = iter(range(10**9))

    def body() -> bytes:
        return urlencode({"payload": json.dumps(payloads[next(turn) % len(payloads)])}).encode()

    return body


@contextmanager
def the_bot(workdir: Path) -> Iterator[tuple[Target, Sandbox]]:
    """The demo's bot with one plan waiting for approval."""
    with demo_world(workdir, ready_delay=0.1) as world:
        sandbox = world.sandbox
        channel, ts = _plan_waiting(sandbox)
        alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
        later = sandbox.process.deps.later

        def idle() -> bool:
            stats = later.snapshot()
            return stats.queued + stats.running == 0

        yield (
            Target(
                name="bot",
                url=sandbox.platform.bot_url,
                secret=sandbox.settings.slack_signing_secret.get_secret_value(),
                command=_command_body(alice),
                approve=_approve_body([bob, alice], channel, ts),
                idle=idle,
                refused=lambda: later.snapshot().refused,
            ),
            sandbox,
        )


def _plan_waiting(sandbox: Sandbox) -> tuple[str, str]:
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    _until(lambda: sandbox.slack.view(view_id).updates, "the modal to fill")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    alice.submit(view_id)
    channel = next(iter(sandbox.config.environments.values())).incident_channel

    def plan() -> Any:
        return next(
            (m for m in sandbox.slack.messages(channel) if "approve_run" in str(m.blocks)), None
        )

    message = _until(plan, "the plan message")
    return message.channel, message.ts


def _until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"bench_ack: timed out waiting for {what}")


@contextmanager
def the_bare_app(sandbox: Sandbox, *, inline: bool) -> Iterator[Target]:
    """A Bolt app whose listeners only ack, behind the same server with the same limits.

    `inline`: Bolt runs the listener on the HTTP thread (`process_before_response=True`,
    as the bot does); otherwise Bolt's default, its listener executor.
    """
    app = App(
        signing_secret=SECRET,
        client=WebClient(token=sandbox.slack.token, base_url=sandbox.slack.url),
        token_verification_enabled=False,
        process_before_response=inline,
    )

    def only_ack(ack: Ack) -> None:
        ack()

    app.command("/rollback")(only_ack)
    app.action("approve_run")(only_ack)
    handler = SlackRequestHandler(app, path="/slack/events")
    server = HttpServer(handler, host="127.0.0.1", port=0, limits=http_limits(Settings()))
    host, port = server.start()
    platform = Platform(bot_url="", signing_secret=SECRET, slack=sandbox.slack)
    person = platform.person(ALICE, "alice")
    try:
        yield Target(
            name="bare inline" if inline else "bare",
            url=f"http://{host}:{port}/slack/events",
            secret=SECRET,
            command=_command_body(person),
            approve=_approve_body([sandbox.person(BOB)], *_any_plan(sandbox)),
            idle=lambda: True,
        )
    finally:
        server.stop()


def _any_plan(sandbox: Sandbox) -> tuple[str, str]:
    channel = next(iter(sandbox.config.environments.values())).incident_channel
    message = next(m for m in sandbox.slack.messages(channel) if "approve_run" in str(m.blocks))
    return message.channel, message.ts


def _ms(values: list[float], q: float) -> str:
    return f"{_q(values, q) * 1000:.0f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per cell")
    parser.add_argument("--clients", default="1,10,50", help="concurrency levels")
    parser.add_argument(
        "--rounds", type=int, default=4, help="each cell is sent in this many interleaved rounds"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="requests of each kind sent to each app first, not counted (imports, connections)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    rows = []
    busy: list[str] = []
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bench-ack-")
    with (
        the_bot(Path(tmp)) as (bot, sandbox),
        the_bare_app(sandbox, inline=False) as bare,
        the_bare_app(sandbox, inline=True) as inline,
    ):
        apps = [bot, bare, inline]
        for app in apps:  # the first requests import what the work needs: not an ack's cost
            for body in (app.command, app.approve):
                cell(app, body, clients=1, requests=args.warmup)
        for clients in levels:
            refused = bot.refused()
            took = _level(apps, clients=clients, requests=args.requests, rounds=args.rounds)
            rows.append((clients, took))
            busy.append(f"{clients} clients: {bot.refused() - refused}")
            print("done", clients, "clients", flush=True)
        lost = {app.name: burst(app) for app in apps}
        print(f"stats of the bot's work pool: {bot_stats(sandbox)}")
    shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        f"\n{args.requests} requests per cell in {args.rounds} interleaved rounds, after "
        f"{args.warmup} uncounted of each kind to each app; "
        f"ack p50 / p99 in ms (send to HTTP answer); 1-minute load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores)"
    )
    for kind, title in (("command", "`/rollback app prod`"), ("approve", "Approve")):
        print(f"\n{title}\n")
        print(
            "| clients | bot | bare (Bolt's executor) | bare inline "
            "| bot p99 / bare p99 | bot p99 / bare inline p99 |"
        )
        print("|---|---|---|---|---|---|")
        for clients, took in rows:
            cells = [_cell(*took[(app.name, kind)]) for app in apps]
            bot_times = took[("bot", kind)][0]
            ratios = [_ratio(bot_times, took[(name, kind)][0]) for name in ("bare", "bare inline")]
            print("| " + " | ".join([str(clients), *cells, *ratios]) + " |")
    print(f"\nrequests the bot answered busy (its work pool full): {', '.join(busy)}")
    said = ", ".join(f"{name} lost {n}" for name, n in lost.items())
    print(f"\nburst of 100 simultaneous `/rollback app prod`: {said}")


def _level(
    apps: list[Target], *, clients: int, requests: int, rounds: int
) -> dict[tuple[str, str], tuple[list[float], int]]:
    """Each app's latencies and requests sent per kind, in rounds that alternate the apps
    (so the machine's load drift reaches them alike)."""
    took: dict[tuple[str, str], list[float]] = {}
    sent: dict[tuple[str, str], int] = {}
    share = max(clients, requests // rounds)
    for _ in range(rounds):
        for kind in ("command", "approve"):
            for app in apps:
                body = app.command if kind == "command" else app.approve
                key = (app.name, kind)
                took.setdefault(key, []).extend(cell(app, body, clients=clients, requests=share))
                sent[key] = sent.get(key, 0) + max(1, share // clients) * clients
    return {key: (times, sent[key]) for key, times in took.items()}


def _cell(times: list[float], sent: int) -> str:
    lost = sent - len(times)
    return f"{_ms(times, 0.5)} / {_ms(times, 0.99)}" + (f" ({lost} lost)" if lost else "")


def _ratio(bot: list[float], bare: list[float]) -> str:
    if not bot or not bare:
        return "-"
    return f"{_q(bot, 0.99) / _q(bare, 0.99):.2f}"


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bot_stats(sandbox: Sandbox) -> str:
    stats = sandbox.process.deps.later.snapshot()
    return (
        f"done {stats.done}, refused {stats.refused}, failed {stats.failed}, "
        f"waited {stats.waited_seconds:.1f}s in all"
    )


if __name__ == "__main__":
    main()
