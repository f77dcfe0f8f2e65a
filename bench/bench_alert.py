"""Alert to healthy: a Prometheus rule through Alertmanager to the bot's Kubernetes rollback,
against `kubectl rollout undo && kubectl rollout status` started at the same alert.

Run by hand, never by pytest (needs the Debian `prometheus`, `prometheus-alertmanager` and
kubectl 1.32):

    python bench/bench_alert.py --veto 5 --group-wait 2 --ready-delay 1 --replicas 3

It starts two identical Kubernetes stand-ins (sandbox/kubernetes: voxflow-api, `--replicas`
replicas, each becoming ready `--ready-delay` seconds after it starts), an application
whose /metrics says `voxflow_error_ratio` 1 while the first stand-in runs the bad image and
whose /health fails then, a real Prometheus (scrape and rule evaluation every second, rule
`voxflow_error_ratio > 0.5`, `for: 0s`, labels environment=prod target=app), a real
Alertmanager (`group_wait` as given, webhook to the bot with a bearer token), and the bot
(sandbox harness: fake Slack, SQLite, the real Bolt app over HTTP, its runner) with
`auto_rollback: true`, `veto_seconds` as given and the health check on the application.

Then `kubectl set image` deploys the bad image on both stand-ins. The alert's moment is
Prometheus' `activeAt` for it. The bench polls Prometheus' alerts every 20 ms; when the
alert is firing it runs `kubectl rollout undo && kubectl rollout status` on the second
stand-in, while the bot, told by Alertmanager, opens the incident, waits out the veto window
and rolls the first stand-in back to the previous revision, then polls the health check.
Printed: the alert's moment, the bot's milestones after it (incident opened, rollback
started, health check passed), kubectl's time, and the goal: the bot's alert-to-healthy at
most the veto window plus group_wait plus 1.1 times kubectl's time.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from bot.config import parse_config
from sandbox.harness import Sandbox
from sandbox.kubernetes import FakeKubernetes

NAMESPACE, APP = "voxflow-prod", "voxflow-api"
GOOD, BAD = "voxflow/api:v1.4.0", "voxflow/api:v1.4.1"
TOKEN = "bench-alert-bearer"
CHANNEL = "C0PRODUCT1"
PEOPLE = {"U0000ALICE": "alice", "U00000BOB": "bob", "U000CAROL": "carol"}
T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float, what: str) -> T:
    """Poll `check` every 20 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def free_port() -> int:
    """A TCP port nothing listens on on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def daemon(argv: list[str], *, log: Path) -> Iterator[None]:
    """Run a server in the background, its output to `log`; stop it after."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--veto", type=float, default=5.0, help="the bot's veto_seconds")
    parser.add_argument("--group-wait", type=float, default=2.0, help="Alertmanager group_wait, s")
    parser.add_argument("--ready-delay", type=float, default=1.0, help="a pod's time to ready, s")
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args(argv)
    if args.veto < 0 or args.group_wait <= 0 or args.ready_delay < 0 or args.replicas < 1:
        parser.error("--veto >= 0, --group-wait > 0, --ready-delay >= 0, --replicas >= 1")
    return args


def image_of(kube: FakeKubernetes) -> str:
    """The image the deployment's pod template names."""
    spec = kube.deployment(NAMESPACE, APP)["spec"]["template"]["spec"]
    return str(spec["containers"][0]["image"])


def serve_app(kube: FakeKubernetes) -> tuple[ThreadingHTTPServer, str]:
    """The application: errors and a failing health check while the bad image runs."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            bad = image_of(kube) == BAD
            if self.path == "/metrics":
                body = f"voxflow_error_ratio {1 if bad else 0}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
            else:
                body = b'{"status": "down"}' if bad else b'{"status": "ok"}'
                self.send_response(503 if bad else 200)
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def write_configs(folder: Path, *, app: str, am_port: int, alerts_url: str, wait: float) -> None:
    """prometheus.yml, rules.yml and alertmanager.yml."""
    rules = {
        "groups": [
            {
                "name": "voxflow",
                "rules": [
                    {
                        "alert": "HighErrorRate",
                        "expr": "voxflow_error_ratio > 0.5",
                        "for": "0s",
                        "labels": {"environment": "prod", "target": "app", "severity": "critical"},
                        "annotations": {"summary": "error ratio {{ $value }}"},
                    }
                ],
            }
        ]
    }
    prometheus = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [
            {"job_name": "voxflow", "static_configs": [{"targets": [app.removeprefix("http://")]}]}
        ],
    }
    alertmanager = {
        "route": {
            "receiver": "rollback-bot",
            "group_by": ["alertname", "environment", "target"],
            "group_wait": f"{wait:g}s",
            "group_interval": "1m",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "rollback-bot",
                "webhook_configs": [
                    {
                        "url": alerts_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
                    }
                ],
            }
        ],
    }
    (folder / "rules.yml").write_text(yaml.safe_dump(rules))
    (folder / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))


def bot_config(kubeconfig: Path, app: str, veto: float) -> Any:
    """prod: the Kubernetes target on the first stand-in, auto-rollback after the veto."""
    env = {
        "incident_channel": CHANNEL,
        "approvers": {"users": list(PEOPLE)[1:]},
        "auto_rollback": True,
        "veto_seconds": veto,
        "health_url": f"{app}/health",
        "targets": {
            "app": {
                "kind": "kubernetes",
                "namespace": NAMESPACE,
                "deployment": APP,
                "connection": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
                "rollout_timeout": 300,
            }
        },
    }
    return parse_config({"environments": {"prod": env}}, path=Path("bench.yml"))


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl against a stand-in."""
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args, "-n", NAMESPACE],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def ready(url: str) -> bool:
    """Whether a Prometheus or Alertmanager answers /-/ready."""
    try:
        return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def firing(prometheus: str) -> datetime | None:
    """The activeAt of the firing HighErrorRate alert, if it fires."""
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    for alert in alerts:
        if alert["labels"]["alertname"] == "HighErrorRate" and alert["state"] == "firing":
            return parse_time(alert["activeAt"])
    return None


def logged(log: Path, message: str) -> datetime:
    """The time of the first line of Alertmanager's debug log saying `message`."""
    for line in log.read_text().splitlines():
        if message in line:
            return parse_time(line.split()[0].removeprefix("ts="))
    raise ValueError(f"Alertmanager's log does not say {message!r}")


def parse_time(text: str) -> datetime:
    """Prometheus' RFC 3339 time with nanoseconds."""
    text = text.removesuffix("+00:00").rstrip("Z")
    head, _, rest = text.partition(".")
    fraction = (rest[:6] if rest else "0").ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{fraction}").replace(tzinfo=UTC)


def aware(moment: datetime | None) -> datetime:
    """A stored time as UTC."""
    assert moment is not None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace, folder: Path) -> int:
    """Start everything, deploy the bad image, measure both ways."""
    prometheus_bin, alertmanager_bin = (
        shutil.which("prometheus"),
        shutil.which("prometheus-alertmanager"),
    )
    if not prometheus_bin or not alertmanager_bin or not shutil.which("kubectl"):
        print("needs prometheus, prometheus-alertmanager and kubectl on PATH")
        return 1
    clusters = [FakeKubernetes(ready_delay=args.ready_delay).start() for _ in range(2)]
    app_server, sandbox = None, None
    try:
        configs = []
        for n, kube in enumerate(clusters):
            kube.add_deployment(NAMESPACE, APP, images=[GOOD], replicas=args.replicas)
            configs.append(kube.write_kubeconfig(folder / f"kubeconfig{n}"))
        app_server, app = serve_app(clusters[0])
        sandbox = Sandbox(
            config=bot_config(configs[0], app, args.veto),
            workdir=folder,
            people=PEOPLE,
            alert_token=TOKEN,
        ).start()
        am_port, prom_port = free_port(), free_port()
        write_configs(
            folder, app=app, am_port=am_port, alerts_url=sandbox.alerts_url, wait=args.group_wait
        )
        am_argv = [
            alertmanager_bin,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]
        prom_argv = [
            prometheus_bin,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        prometheus = f"http://127.0.0.1:{prom_port}"
        with (
            daemon(am_argv, log=folder / "alertmanager.log"),
            daemon(prom_argv, log=folder / "prometheus.log"),
        ):
            wait_for(lambda: ready(f"http://127.0.0.1:{am_port}"), timeout=60, what="Alertmanager")
            wait_for(lambda: ready(prometheus), timeout=60, what="Prometheus")
            for kubeconfig in configs:
                done = kubectl(kubeconfig, "set", "image", f"deployment/{APP}", f"{APP}={BAD}")
                assert done.returncode == 0, done.stderr
            deployed = datetime.now(UTC)
            alert = wait_for(lambda: firing(prometheus), timeout=120, what="the alert")
            seen = datetime.now(UTC)
            started = time.perf_counter()
            undo = kubectl(configs[1], "rollout", "undo", f"deployment/{APP}")
            status = kubectl(configs[1], "rollout", "status", f"deployment/{APP}")
            by_kubectl = time.perf_counter() - started
            assert undo.returncode == 0 and status.returncode == 0, undo.stderr + status.stderr
            store = sandbox.process.store
            (run_row,) = wait_for(store.runs, timeout=120, what="the incident from Alertmanager")
            done_run = wait_for(
                lambda: (
                    (r := store.runs.get(run_row.id)) and r.state in {"succeeded", "failed"} and r
                ),
                timeout=600,
                what="the bot's rollback",
            )
            steps = store.steps.of(run_row.id)
            health = next(s for s in steps if s.name == "http.health")
            first = min(aware(s.started_at) for s in steps if s.started_at)
            timeline = [
                f"  {(aware(s.started_at) - alert).total_seconds():7.2f} "
                f"{(aware(s.finished_at) - alert).total_seconds():7.2f}  {s.name}"
                for s in steps
                if s.started_at and s.finished_at
            ]
            opened = aware(run_row.created_at)
            marks = {
                "veto ends": done_run.auto_approve_at,
                "approved": done_run.approved_at,
                "run started": done_run.started_at,
            }
        am_log = folder / "alertmanager.log"
        got, flushed, notified = (
            logged(am_log, text)
            for text in ('msg="Received alert"', "msg=flushing", "Notify success")
        )
        if done_run.state != "succeeded" or image_of(clusters[0]) != GOOD:
            print(f"the bot's rollback ended {done_run.state}; image {image_of(clusters[0])}")
            return 1
        to_healthy = (aware(health.finished_at) - alert).total_seconds()
        goal = args.veto + args.group_wait + 1.1 * by_kubectl

        def after(moment: datetime) -> str:
            return f"{(moment - alert).total_seconds():.2f} s"

        print(
            f"{args.replicas} replicas, ready {args.ready_delay:g} s after start; veto "
            f"{args.veto:g} s, group_wait {args.group_wait:g} s\n"
            f"bad image deployed -> alert active (Prometheus activeAt): "
            f"{(alert - deployed).total_seconds():.2f} s; seen firing by the bench "
            f"{after(seen)} after activeAt\n"
            f"after the alert (Alertmanager's debug log, ms resolution): received {after(got)}, "
            f"group flushed to the bot {after(flushed)}, the bot answered the webhook "
            f"{after(notified)}; incident recorded {after(opened)}, "
            + "".join(f"{k} {after(aware(v))}, " for k, v in marks.items() if v is not None)
            + f"first step started {after(first)}, health check passed {to_healthy:.2f} s\n"
            "the bot's steps (start, end, s after the alert):\n" + "\n".join(timeline) + "\n"
            f"kubectl rollout undo && kubectl rollout status: {by_kubectl:.2f} s (started "
            f"{after(seen)} after activeAt)\n"
            f"goal: bot {to_healthy:.2f} s <= veto + group_wait + 1.1 x kubectl = {goal:.2f} s: "
            f"{'met' if to_healthy <= goal else 'NOT met'}"
        )
    finally:
        if sandbox is not None:
            sandbox.stop()
        if app_server is not None:
            app_server.shutdown()
        for kube in clusters:
            kube.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="rbbench_alert_"))
    try:
        return run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
