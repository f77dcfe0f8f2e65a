"""`rollback-bot demo`: the whole job on this machine, no Slack app, no cluster, no cloud.

It starts the stand-ins (fake Slack Web API, fake Kubernetes API server with
its deployment controller, a local health and maintenance endpoint), the bot's
schema in a temporary SQLite file, and the real Bolt app on its real HTTP
endpoint with a generated signing secret. Then people act through signed
requests exactly as Slack would send them: alice asks for a rollback and
answers the modal, tries to approve her own request and is refused, bob
approves, and the bot rolls `voxflow-api` back on the fake cluster.

Everything the incident channel would show is printed as it happens. Each
expectation is checked; the first one that fails ends the demo with a
non-zero exit and says what did not happen.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bot.config import RollbackConfig, load_config
from bot.serving.signals import stopped_by_signals, wait_until_stopped
from sandbox.harness import Sandbox
from sandbox.kubernetes import FakeKubernetes
from sandbox.slack import Call, FakeSlack
from sandbox.web import Reply, Request, WebStub

DEMO_CONFIG = Path(__file__).parents[1] / "examples" / "demo.yml"
ALICE, BOB = "U0ALICE001", "U0BOB00001"
PEOPLE = {ALICE: "alice", BOB: "bob"}
NAMESPACE, APP, WORKER = "voxflow-prod", "voxflow-api", "voxflow-worker"
IMAGES = ["voxflow/api:v1.2.2", "voxflow/api:v1.2.3", "voxflow/api:v1.2.4"]
GOOD_IMAGE = IMAGES[1]
CHANNEL = "C0DEMOINCI"


class DemoFailure(Exception):
    """Something did not happen as the demo describes."""


def wait(check: Callable[[], Any], *, seconds: float, what: str) -> Any:
    """Poll until `check` is truthy, or fail saying `what` did not happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise DemoFailure(f"{what} did not happen within {seconds:.0f}s")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Printer:
    """Prints what the incident channel shows, as the bot calls Slack.

    A new message is printed whole; an edit prints its first line and only the
    lines that changed, so the progress message reads as a log of steps.
    """

    def __init__(self, slack: FakeSlack, out: TextIO) -> None:
        self.slack = slack
        self.out = out
        self.shown: dict[str, list[str]] = {}
        self.replies: set[str] = set()
        self.files_shown = 0

    def __call__(self, call: Call) -> None:
        if not call.ok:
            self._line(f"  (Slack answered {call.error or call.status} to {call.method})")
            return
        args, response = call.args, call.response or {}
        match call.method:
            case "chat.postMessage":
                self._posted(args, str(response.get("ts")))
            case "chat.update":
                self._edited(args)
            case "chat.postEphemeral":
                self._line(f"  (only {args.get('user')} sees) {args.get('text')}")
            case "views.open" | "views.update":
                self._view(args.get("view") or {})
            case "files.completeUploadExternal":
                for file in args.get("files") or []:
                    self._file(str(file.get("id")), str(file.get("title")))
                self.files_shown += 1  # counted once the whole upload (template and chart) is out

    def _posted(self, args: dict[str, Any], ts: str) -> None:
        lines = render_blocks(args.get("blocks") or []) or [str(args.get("text", ""))]
        reply = bool(args.get("thread_ts"))
        if reply:
            self.replies.add(ts)
        self.shown[ts] = lines
        pad = "    " if reply else ""
        self._line(f"{pad}{'↳ ' if reply else '■ '}{lines[0]}")
        for line in lines[1:]:
            self._line(f"{pad}  {line}")

    def _edited(self, args: dict[str, Any]) -> None:
        ts = str(args.get("ts"))
        lines = render_blocks(args.get("blocks") or []) or [str(args.get("text", ""))]
        before = set(self.shown.get(ts, []))
        self.shown[ts] = lines
        changed = [line for line in lines[1:] if line not in before]
        if not changed and lines[0] in before:
            return
        pad = "    " if ts in self.replies else ""
        self._line(f"{pad}✎ {lines[0]}")
        for line in changed:
            self._line(f"{pad}  {line}")

    def _view(self, view: dict[str, Any]) -> None:
        title = (view.get("title") or {}).get("text", "")
        for block in view.get("blocks") or []:
            if block.get("block_id") == "recommendation":
                self._line(f"  [modal '{title}'] {block['text']['text'].splitlines()[0]}")
                return
        self._line(f"  [modal '{title}'] {' '.join(render_blocks(view.get('blocks') or []))}")

    def _file(self, file_id: str, title: str) -> None:
        self._line(f"    ↳ file attached: {title}")
        for uploaded in self.slack.files():
            if uploaded.id != file_id:
                continue
            if uploaded.content.startswith(PNG_SIGNATURE):
                self._line(f"      | (a PNG image, {len(uploaded.content):,} bytes)")
                continue
            for line in uploaded.text.splitlines():
                self._line(f"      | {line}")

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def render_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """Block Kit as terminal lines."""
    lines: list[str] = []
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            lines += str(text.get("text", "")).splitlines()
        for element in block.get("elements") or []:
            label = element.get("text")
            if element.get("type") == "button" and isinstance(label, dict):
                lines.append(f"[{label['text']}]")
            elif isinstance(label, str):
                lines += label.splitlines()
        accessory = block.get("accessory") or {}
        selected = {o["value"] for o in accessory.get("initial_options") or []}
        for option in accessory.get("options") or []:
            mark = "x" if option["value"] in selected else " "
            lines.append(f"[{mark}] {option['text']['text']}")
    return [line for line in lines if line.strip()]


def health_of(kube: FakeKubernetes) -> Callable[[Request], Reply]:
    """The app is healthy once the old revision runs on every replica again."""

    def answer(_request: Request) -> Reply:
        deployment = kube.deployment(NAMESPACE, APP)
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        status = deployment.get("status", {})
        wanted = deployment["spec"]["replicas"]
        settled = status.get("updatedReplicas") == wanted == status.get("availableReplicas")
        if image == GOOD_IMAGE and settled:
            return Reply(200, json={"status": "ok", "image": image})
        return Reply(503, json={"status": "calls dropping", "image": image})

    return answer


@dataclass(frozen=True)
class DemoCluster:
    """The demo's stand-ins besides Slack: its cluster, its web endpoints, and the config
    pointing at them."""

    kube: FakeKubernetes
    web: WebStub
    kubeconfig: Path
    config: RollbackConfig


@dataclass(frozen=True)
class DemoWorld:
    """The demo's stand-ins and the bot serving them."""

    kube: FakeKubernetes
    web: WebStub
    kubeconfig: Path
    sandbox: Sandbox


@contextmanager
def demo_cluster(workdir: Path, *, ready_delay: float = 0.3) -> Iterator[DemoCluster]:
    """Start the demo's cluster (voxflow-api on v1.2.4, its worker) and its health and
    maintenance endpoints; stop them afterwards."""
    kube = FakeKubernetes(ready_delay=ready_delay).start()
    web = WebStub().start()
    try:
        kube.add_deployment(NAMESPACE, APP, images=IMAGES, replicas=3)
        kube.add_deployment(NAMESPACE, WORKER, images=["voxflow/worker:v1.2.4"], replicas=2)
        kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig")
        web.route("GET", "/health", health_of(kube))
        web.route("POST", "/api/admin/maintenance", Reply(200, json={"ok": True}))
        environ = {**os.environ, "DEMO_KUBECONFIG": str(kubeconfig), "DEMO_WEB": web.url}
        config = load_config(DEMO_CONFIG, environ=environ)
        yield DemoCluster(kube=kube, web=web, kubeconfig=kubeconfig, config=config)
    finally:
        web.stop()
        kube.stop()


@contextmanager
def demo_world(workdir: Path, *, ready_delay: float = 0.3) -> Iterator[DemoWorld]:
    """The demo's cluster and endpoints (`demo_cluster`) and the bot serving them. The demo,
    the ack tests and the ack benchmark share it."""
    with (
        demo_cluster(workdir, ready_delay=ready_delay) as cluster,
        Sandbox(config=cluster.config, workdir=workdir, people=PEOPLE) as sandbox,
    ):
        yield DemoWorld(
            kube=cluster.kube, web=cluster.web, kubeconfig=cluster.kubeconfig, sandbox=sandbox
        )


def run(*, step: bool = False, keep: bool = False, out: TextIO = sys.stdout) -> int:
    """Play the incident; return the exit status."""
    workdir = Path(tempfile.mkdtemp(prefix="rb-demo-"))
    try:
        with demo_world(workdir) as world:
            sandbox = world.sandbox
            printer = Printer(sandbox.slack, out)
            sandbox.slack.on_call(printer)
            print(
                f"rollback-bot demo: voxflow-api runs {IMAGES[-1]} and calls are dropping.",
                file=out,
            )
            summary = play(sandbox, world.kube, step=step, out=out)
            wait(lambda: printer.files_shown, seconds=10, what="the template being shown")
            print(f"\n{summary}", file=out, flush=True)
            if keep:
                _keep(sandbox, world.kube, world.kubeconfig, world.web, out)
            return 0
    except DemoFailure as exc:
        print(f"\ndemo failed: {exc}", file=out)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def play(sandbox: Sandbox, kube: FakeKubernetes, *, step: bool, out: TextIO) -> str:
    """Act the incident as people would; return the one-line summary."""
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    pause(step, "alice types /rollback app prod", out)
    if alice.slash("app prod").status_code != 200:
        raise DemoFailure("the bot did not accept /rollback app prod")
    view_id = wait(lambda: _opened(alice), seconds=10, what="the rollback modal opening")
    wait(lambda: sandbox.slack.view(view_id).updates, seconds=15, what="the modal filling in")
    pause(step, "alice answers: High, not functional, data not at risk, impact severe", out)
    answers = {
        "severity": "high",
        "q_functional": "no",
        "q_data_at_risk": "no",
        "q_severe_impact": "yes",
    }
    for block_id, value in answers.items():
        alice.choose(view_id, block_id, value)
    alice.choose(view_id, "summary", "Calls drop after 10 seconds since the v1.2.4 deploy")
    wait(
        lambda: "Rollback recommended" in str(sandbox.slack.view(view_id).view["blocks"]),
        seconds=10,
        what="the modal recommending a rollback",
    )
    pause(step, "alice submits the form", out)
    if alice.submit(view_id).json().get("response_action") != "update":
        raise DemoFailure("the bot refused the form")
    plan = wait(lambda: _plan_message(sandbox), seconds=20, what="the plan in the incident thread")
    pause(step, "alice tries to approve her own request", out)
    alice.click(CHANNEL, plan.ts, "approve_run")
    wait(
        lambda: any("second person" in e.text for e in sandbox.slack.ephemerals(CHANNEL)),
        seconds=10,
        what="alice's self-approval being refused",
    )
    pause(step, "bob approves", out)
    bob.click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    run = wait(lambda: _finished(sandbox), seconds=45, what="the rollback finishing")
    if run.state != "succeeded":
        raise DemoFailure(f"the rollback {run.state}: {run.outcome}")
    wait(lambda: sandbox.slack.files(), seconds=10, what="the post-incident template")
    _check_cluster(kube)
    events = store.events.of(run.incident_id)
    approved = next(e.at for e in events if e.kind == "run.approved")
    healthy = next(
        e.at for e in events if e.kind == "step.succeeded" and "health" in e.detail["name"]
    )
    seconds = (healthy - approved).total_seconds()
    return (
        f"{run.incident_id}: voxflow-api rolled back from {IMAGES[-1]} to {GOOD_IMAGE}, "
        f"healthy {seconds:.1f}s after bob's approval."
    )


def _opened(person: Any) -> str | None:
    try:
        return str(person.opened_view(wait=0.1))
    except AssertionError:
        return None


def _plan_message(sandbox: Sandbox) -> Any:
    return next(
        (m for m in sandbox.slack.messages(CHANNEL) if m.text.startswith("Rollback plan")), None
    )


def _finished(sandbox: Sandbox) -> Any:
    runs = sandbox.process.store.runs.find()
    done = runs and runs[0].state in ("succeeded", "failed")
    return runs[0] if done and sandbox.slack.files() else None


def _check_cluster(kube: FakeKubernetes) -> None:
    deployment = kube.deployment(NAMESPACE, APP)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    if image != GOOD_IMAGE:
        raise DemoFailure(f"voxflow-api runs {image}, not {GOOD_IMAGE}")
    workers = kube.deployment(NAMESPACE, WORKER)["spec"]["replicas"]
    if workers != 2:
        raise DemoFailure(f"voxflow-worker has {workers} replicas, not the 2 it had")


def pause(step: bool, what: str, out: TextIO) -> None:
    """Say what happens next; with --step, wait for Enter first."""
    print(f"\n▶ {what}", file=out, flush=True)
    if step:
        input("  (press Enter) ")


def _keep(
    sandbox: Sandbox, kube: FakeKubernetes, kubeconfig: Path, web: WebStub, out: TextIO
) -> None:
    secret = sandbox.settings.slack_signing_secret.get_secret_value()
    print(
        "\nEverything keeps running (Ctrl-C to stop):\n"
        f"  bot request URL   {sandbox.platform.bot_url}  (signing secret {secret})\n"
        f"  bot health        {sandbox.platform.bot_url.replace('/slack/events', '/healthz')}\n"
        f"  fake Slack API    {sandbox.slack.url}\n"
        f"  fake Kubernetes   {kube.url}  (kubectl --kubeconfig {kubeconfig} "
        f"-n {NAMESPACE} get deployments)\n"
        f"  app health        {web.url}/health\n"
        "Send your own signed requests with sandbox.platform.Platform.",
        file=out,
        flush=True,
    )
    stop = threading.Event()
    with stopped_by_signals(stop):
        wait_until_stopped(stop)
    print("stopping", file=out, flush=True)
