"""How fast the bot acks Slack under load, next to a bare Bolt app on the same server.

Run by hand, never by pytest:

    python bench/bench_ack.py --requests 200

Each app runs in processes of its own, apart from the bench's client threads
(which would otherwise take the GIL from the server they time), behind
`bot.server.HttpServer` with the same limits (`http_limits` of default
settings: 8 threads):
- **bot**: `rollback-bot serve --http` as an operator runs it, on the demo's
  config (examples/demo.yml) and a SQLite file: one process that acks
  (signature check, secret masking, Bolt, every listener) and hands the work
  (opening the modals, reading the Deployment, applying approvals) to its
  bounded pool. The bench asks the bot whether it is idle through its
  /metrics, and reads its resident memory (RSS, and its peak) from /proc
  after each level of concurrency.
- **stand-ins**: fake Slack and the demo's fake Kubernetes API server and web
  endpoints, in a process of their own, as Slack and a Kubernetes API server
  are other machines in production. They still share the machine's two
  cores with the bot, so they run at nice 10: their work while the bot opens
  forms (answering its reads) would otherwise take a core from the bot's
  acks, which production does not do.
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
runs (other processes on a shared machine) reaches both alike, and the bare
apps' cells are sent while the bot still works off its own cell of the same
kind just before (the same work running beside both: the fair comparison);
the load average before and after is printed with the table:
- `/rollback app prod`, each with a new trigger id: the bot acks, then opens
  the modal and reads the Deployment on its pool (that work competes for the
  same two cores, and is included in the load, not in the ack);
- Approve on one plan message by the two demo people in turn: Bob's first
  click is applied, every other is a repeat or a refusal the bot answers
  ephemerally after the ack.
Before the cells, `--warmup` requests of each kind go to each app and are not
counted: the bot's first form imports the Kubernetes client and the target
modules (about a second of CPU, once per process), which is start-up, not an
ack. Between rounds the bench waits until the bot's work pool is idle. Then it
fires a burst of `--burst` (500) simultaneous `/rollback app prod` (a thread
and a new connection each) at each app and counts the requests lost (no HTTP
200; the bot's "busy" answer is a 200 and counted apart).

With each kind's table comes each process's CPU per request (from /proc, so
Linux only): the client's while it sent; the app's processes' and the
stand-ins' both while the cell's requests were answered and until the app was
idle again, so the bot's work after its acks shows where it lands. The client
threads speak the standard library's http.client (`_Connection`), the lightest
client at hand: its CPU is taken from the same two cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.app import http_limits
from bot.config import RollbackConfig
from bot.demo import ALICE, BOB, CHANNEL, DEMO_CONFIG, PEOPLE, demo_cluster
from bot.server import HttpServer
from bot.settings import Settings
from sandbox.harness import seeded_slack
from sandbox.platform import Person, Platform, sign
from sandbox.slack import FakeSlack

ANSWERS = {
    "severity": "high",
    "q_functional": "no",
    "q_data_at_risk": "no",
    "q_severe_impact": "yes",
}
SECRET = "bench-signing-secret-0123456789ab"
STAND_INS_NICENESS = 10
"""The stand-ins stand for other machines: they yield the cores to the apps under test."""


@dataclass
class Target:
    """One app under test, served by processes of its own: where to post, how to sign, how
    to ask it whether it is idle ("idle", "refused", "stats"), and the processes whose CPU
    each cell counts (its own and the stand-ins', by name)."""

    name: str
    url: str
    secret: str
    command: Callable[[], bytes]
    approve: Callable[[], bytes]
    ask: Callable[[str], Any]
    processes: dict[str, int]

    def idle(self) -> bool:
        return bool(self.ask("idle"))

    def refused(self) -> int:
        """How many requests the app answered "busy" so far (its work pool was full)."""
        return int(self.ask("refused"))


class _Connection:
    """One client's keep-alive connection to an app, with the standard library's
    http.client: a quarter of httpx's CPU per request (0.27 against 1.04 ms for a 600-byte
    post, one thread), CPU the client would otherwise take from the servers it times on the
    same two cores. The same client for every app."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "", parts.port)
        self._path = parts.path
        self._open: http.client.HTTPConnection | None = None

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open is not None:
            self._open.close()

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status; a failed connection is closed and reopened next time."""
        if self._open is None:
            self._open = http.client.HTTPConnection(*self._address, timeout=10.0)
        try:
            self._open.request("POST", self._path, body=body, headers=headers)
            response = self._open.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self._open.close()
            self._open = None
            raise
        return response.status


def _post(client: _Connection, target: Target, body: bytes) -> float | None:
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(target.secret, stamp, body),
    }
    began = time.perf_counter()
    try:
        status = client.post(body, headers)
    except (OSError, http.client.HTTPException):
        return None
    took = time.perf_counter() - began
    return took if status == 200 else None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), MiB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


Key = tuple[str, str]
"""(app, kind of request)"""


@dataclass
class Cell:
    """One cell's latencies, and the CPU each process used per request sent: while the
    requests were answered, and until the app was idle again (the work after the acks)."""

    times: list[float]
    sent: int
    cpu: dict[str, float]
    cpu_until_idle: dict[str, float]


@dataclass
class Sent:
    """A cell whose requests were answered; its app may still be working."""

    target: Target
    results: list[float | None]
    began: dict[str, float]
    cpu: dict[str, float]

    def settled(self) -> Cell:
        """Wait until the app is idle; the whole cell."""
        _wait_idle(self.target)
        return Cell(
            times=[t for t in self.results if t is not None],
            sent=len(self.results),
            cpu=self.cpu,
            cpu_until_idle=_used(self.target, self.began, len(self.results)),
        )


def _watched(target: Target) -> dict[str, int]:
    return {"client": os.getpid(), **target.processes}


def _used(target: Target, began: dict[str, float], sent: int) -> dict[str, float]:
    """CPU ms per request each watched process used since `began`."""
    return {n: (cpu_seconds(p) - began[n]) * 1000 / sent for n, p in _watched(target).items()}


def send(target: Target, body: Callable[[], bytes], *, clients: int, requests: int) -> Sent:
    """`requests` requests sent by `clients` threads (lost ones get no time)."""
    per_client = max(1, requests // clients)
    began = {name: cpu_seconds(pid) for name, pid in _watched(target).items()}

    def one_client() -> list[float | None]:
        with _Connection(target.url) as client:
            return [_post(client, target, body()) for _ in range(per_client)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [t for f in [pool.submit(one_client) for _ in range(clients)] for t in f.result()]
    return Sent(target, results, began, _used(target, began, len(results)))


def cell(target: Target, body: Callable[[], bytes], *, clients: int, requests: int) -> Cell:
    """A cell sent, and its app idle again."""
    return send(target, body, clients=clients, requests=requests).settled()


def burst(target: Target, *, size: int = 100) -> int:
    """Send `size` requests at once, each on a new connection; return how many were lost."""
    start = threading.Barrier(size)

    def one() -> bool:
        body = target.command()
        start.wait()
        with _Connection(target.url) as client:
            return _post(client, target, body) is not None

    with ThreadPoolExecutor(max_workers=size) as pool:
        answered = sum(f.result() for f in [pool.submit(one) for _ in range(size)])
    _wait_idle(target)
    return size - answered


def _wait_idle(target: Target) -> None:
    deadline = time.monotonic() + 300
    while not target.idle() and time.monotonic() < deadline:
        time.sleep(0.1)


def _command_fields(person: Person) -> dict[str, str]:
    return {
        "team_id": person.platform.team_id,
        "channel_id": CHANNEL,
        "user_id": person.user_id,
        "user_name": person.name,
        "command": "/rollback",
        "text": "app prod",
        "api_app_id": "A0SANDBOX",
        "response_url": f"{person.platform.slack.base}/commands/response",
    }


def _command_body(fields: dict[str, str]) -> Callable[[], bytes]:
    def body() -> bytes:
        trigger = f"{time.time()}.{os.urandom(8).hex()}"
        return urlencode({**fields, "trigger_id": trigger}).encode()

    return body


def _approve_body(payloads: list[dict[str, Any]]) -> Callable[[], bytes]:
    turn = iter(range(10**9))

    def body() -> bytes:
        return urlencode({"payload": json.dumps(payloads[next(turn) % len(payloads)])}).encode()

    return body


def _answer(pipe: Connection, answers: dict[str, Callable[[], Any]]) -> None:
    """Answer the bench's questions until it says stop (or goes away)."""
    while True:
        try:
            question = pipe.recv()
        except EOFError:
            return
        if question == "stop":
            return
        pipe.send(answers[question]())


def serve_world(pipe: Connection, workdir: str) -> None:
    """In a process of its own: the stand-ins the bot talks to (the demo's cluster, its web
    endpoints, Slack), as Slack and a Kubernetes API server are other machines in
    production. Once the bot serves, put one plan up for approval."""
    _quiet()
    os.nice(STAND_INS_NICENESS)
    with demo_cluster(Path(workdir), ready_delay=0.1) as cluster:
        slack = seeded_slack(cluster.config, PEOPLE)
        try:
            pipe.send(
                {
                    "slack_url": slack.url,
                    "slack_token": slack.token,
                    "kubeconfig": str(cluster.kubeconfig),
                    "web": cluster.web.url,
                }
            )
            bot = pipe.recv()
            platform = Platform(bot_url=bot["url"], signing_secret=bot["secret"], slack=slack)
            alice, bob = platform.person(ALICE, PEOPLE[ALICE]), platform.person(BOB, PEOPLE[BOB])
            channel, ts = _plan_waiting(alice, cluster.config)
            pipe.send(
                {
                    "command": _command_fields(alice),
                    "approve": [p.click_payload(channel, ts, "approve_run") for p in (bob, alice)],
                }
            )
            _answer(pipe, {})
        finally:
            slack.stop()


@contextmanager
def served_bot(workdir: Path, world: dict[str, str]) -> Iterator[dict[str, Any]]:
    """`rollback-bot serve --http` as an operator runs it, answering the stand-ins of
    `serve_world`; asked whether it is idle through its /metrics."""
    database = f"sqlite:///{workdir / 'rollback-bot.db'}"
    secret = "bench-bot-signing-secret-0123456"
    env = {
        **os.environ,
        "DEMO_KUBECONFIG": world["kubeconfig"],
        "DEMO_WEB": world["web"],
        "SLACK_BOT_TOKEN": world["slack_token"],
        "SLACK_API_URL": world["slack_url"],
        "SLACK_SIGNING_SECRET": secret,
        "DATABASE_URL": database,
    }
    bot = [sys.executable, "-m", "bot"]
    subprocess.run([*bot, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    argv = [*bot, "serve", "--http", "127.0.0.1:0", "--config", str(DEMO_CONFIG)]
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base = ""
        for line in process.stdout:
            found = re.search(r"^serving (http://\S+) ", line)
            if found:
                base = found.group(1)
                break
        if not base:
            raise SystemExit("bench_ack: rollback-bot serve did not start")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # drain its output
        processes = {"bot": process.pid}
        yield {
            "url": f"{base}/slack/events",
            "secret": secret,
            "ask": _asking(base),
            "processes": processes,
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def _asking(base: str) -> Callable[[str], Any]:
    """Answer "idle", "refused" and "stats" from the bot's /metrics: its work pool."""

    def gauges() -> dict[str, float]:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("rollback_work_"):
                values[name] = float(value)
        return values

    def ask(question: str) -> Any:
        now = gauges()

        def pool(what: str) -> float:
            return now.get(f"rollback_work_{what}", 0.0)

        if question == "idle":
            return pool("queued") + pool("running") == 0
        if question == "refused":
            return int(pool("refused"))
        return ", ".join(f"{k.removeprefix('rollback_')} {v:g}" for k, v in sorted(now.items()))

    return ask


def _quiet() -> None:
    """waitress warns of every request queued behind busy threads: a load test's normal."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def _plan_waiting(alice: Person, config: RollbackConfig) -> tuple[str, str]:
    slack = alice.platform.slack
    alice.slash("app prod")
    view_id = alice.opened_view()
    _until(lambda: slack.view(view_id).updates, "the modal to fill")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    alice.submit(view_id)
    channel = next(iter(config.environments.values())).incident_channel

    def plan() -> Any:
        return next((m for m in slack.messages(channel) if "approve_run" in str(m.blocks)), None)

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


def serve_bare(pipe: Connection, inline: bool) -> None:
    """In a process of its own: a Bolt app whose listeners only ack, behind the same server
    with the same limits.

    `inline`: Bolt runs the listener on the HTTP thread (`process_before_response=True`,
    as the bot does); otherwise Bolt's default, its listener executor.
    """
    _quiet()
    # Bolt's authorization middleware asks Slack `auth.test` once, on the first request
    slack = FakeSlack().start()
    app = App(
        signing_secret=SECRET,
        client=WebClient(token=slack.token, base_url=slack.url),
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
    try:
        pipe.send({"url": f"http://{host}:{port}/slack/events", "secret": SECRET})
        _answer(pipe, {"idle": lambda: True, "refused": lambda: 0, "stats": lambda: ""})
    finally:
        server.stop()
        slack.stop()


def _sendable(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("ask", "processes")}


def _asking_over(pipe: Connection) -> Callable[[str], Any]:
    lock = threading.Lock()

    def ask(question: str) -> Any:
        with lock:
            pipe.send(question)
            return pipe.recv()

    return ask


@contextmanager
def served(name: str, entry: Callable[..., None], *args: Any) -> Iterator[dict[str, Any]]:
    """Run `entry(pipe, *args)` in a new interpreter; yield what it sends first."""
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    process = spawn.Process(target=entry, args=(theirs, *args), name=name, daemon=True)
    process.start()
    try:
        if not ours.poll(120):
            raise SystemExit(f"bench_ack: {name} did not start within 120 s")
        yield {**ours.recv(), "ask": _asking_over(ours), "processes": {name: process.pid}}
    finally:
        with suppress(OSError):
            ours.send("stop")
        process.join(timeout=60)
        if process.is_alive():
            process.kill()


def target(
    name: str,
    info: dict[str, Any],
    command: dict[str, str],
    approve: list[Any],
    stand_ins: dict[str, int],
) -> Target:
    return Target(
        name=name,
        url=info["url"],
        secret=info["secret"],
        command=_command_body(command),
        approve=_approve_body(approve),
        ask=info["ask"],
        processes={**info["processes"], **stand_ins},
    )


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
    parser.add_argument(
        "--burst", type=int, default=500, help="simultaneous requests in the closing burst"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    rows: list[tuple[int, dict[Key, Cell]]] = []
    busy: list[str] = []
    memory: list[str] = []
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bench-ack-")
    with (
        served("stand-ins", serve_world, tmp) as world,
        served_bot(Path(tmp), _sendable(world)) as bot_info,
        served("bare", serve_bare, False) as bare_info,
        served("bare inline", serve_bare, True) as inline_info,
    ):
        plan = world["ask"](_sendable(bot_info))
        command, approve = plan["command"], plan["approve"]
        stand_ins = world["processes"]
        bot = target("bot", bot_info, command, approve, stand_ins)
        # the bare apps get Bob's click only: to them every click is the same ack
        bare = target("bare", bare_info, command, approve[:1], stand_ins)
        inline = target("bare inline", inline_info, command, approve[:1], stand_ins)
        apps = [bot, bare, inline]
        for app in apps:  # the first requests import what the work needs: not an ack's cost
            for body in (app.command, app.approve):
                cell(app, body, clients=1, requests=args.warmup)
        for clients in levels:
            refused = bot.refused()
            took = _level(apps, clients=clients, requests=args.requests, rounds=args.rounds)
            rows.append((clients, took))
            busy.append(f"{clients} clients: {bot.refused() - refused}")
            now, peak = memory_mib(bot.processes["bot"])
            memory.append(f"{clients} clients: {now:.0f} (peak {peak:.0f})")
            print("done", clients, "clients", flush=True)
        refused = bot.refused()
        lost = {app.name: burst(app, size=args.burst) for app in apps}
        burst_busy = bot.refused() - refused
        print(f"stats of the bot's work pool: {bot.ask('stats')}")
    shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        f"\n{args.requests} requests per cell in {args.rounds} interleaved rounds, after "
        f"{args.warmup} uncounted of each kind to each app; "
        f"ack p50 / p99 in ms (send to HTTP answer); "
        + "the bare apps' cells beside the bot's work; 1-minute load average "
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
            cells = [_cell(took[(app.name, kind)]) for app in apps]
            bot_times = took[("bot", kind)].times
            ratios = [
                _ratio(bot_times, took[(name, kind)].times) for name in ("bare", "bare inline")
            ]
            print("| " + " | ".join([str(clients), *cells, *ratios]) + " |")
        print(
            "\nCPU per request, ms, of each process: while the cell's requests were answered / "
            "until the app was idle again (the bot's work after its acks)\n"
        )
        print("| clients | app | CPU |")
        print("|---|---|---|")
        for clients, took in rows:
            for app in apps:
                print(f"| {clients} | {app.name} | {_cpu(took[(app.name, kind)])} |")
    print(f"\nrequests the bot answered busy (its work pool full): {', '.join(busy)}")
    print(f"\nthe bot's one process, resident MiB after each level: {', '.join(memory)}")
    said = ", ".join(f"{name} lost {n}" for name, n in lost.items())
    print(
        f"\nburst of {args.burst} simultaneous `/rollback app prod`: {said} "
        f"(the bot answered {burst_busy} of them busy)"
    )


def _level(apps: list[Target], *, clients: int, requests: int, rounds: int) -> dict[Key, Cell]:
    """Each app's cells per kind, in rounds that alternate the apps (so the machine's load
    drift reaches them alike), merged over the rounds. The bare apps' cells are sent while
    the bot still works off its own cell of the same kind, sent just before."""
    merged: dict[Key, Cell] = {}
    share = max(clients, requests // rounds)
    bot, *bare = apps
    for _ in range(rounds):
        for kind in ("command", "approve"):
            working = send(bot, _kind(bot, kind), clients=clients, requests=share)
            done: dict[str, Cell] = {}
            for app in bare:
                done[app.name] = cell(app, _kind(app, kind), clients=clients, requests=share)
            done[bot.name] = working.settled()
            for name, new in done.items():
                merged[(name, kind)] = _merge(merged.get((name, kind)), new)
    return merged


def _kind(app: Target, kind: str) -> Callable[[], bytes]:
    return app.command if kind == "command" else app.approve


def _merge(old: Cell | None, new: Cell) -> Cell:
    if old is None:
        return new
    sent = old.sent + new.sent

    def mean(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {n: (a[n] * old.sent + b[n] * new.sent) / sent for n in a}

    return Cell(
        times=old.times + new.times,
        sent=sent,
        cpu=mean(old.cpu, new.cpu),
        cpu_until_idle=mean(old.cpu_until_idle, new.cpu_until_idle),
    )


def _cell(done: Cell) -> str:
    lost = done.sent - len(done.times)
    return f"{_ms(done.times, 0.5)} / {_ms(done.times, 0.99)}" + (f" ({lost} lost)" if lost else "")


def _cpu(done: Cell) -> str:
    """Each process's CPU per request; the client's while it sent only (it then waits for
    the app to be idle, asking it every 0.1 s, which is not a request's cost)."""
    return ", ".join(
        f"{name} {done.cpu[name]:.2f}"
        + ("" if name == "client" else f" / {done.cpu_until_idle[name]:.2f}")
        for name in done.cpu
    )


def _ratio(bot: list[float], bare: list[float]) -> str:
    if not bot or not bare:
        return "-"
    return f"{_q(bot, 0.99) / _q(bare, 0.99):.2f}"


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
