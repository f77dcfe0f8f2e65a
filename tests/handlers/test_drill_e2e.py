"""A drill end to end on the stand-in cluster, through the real Bolt app over HTTP.

alice types `/rollback drill app staging`, bob approves (one approver is
enough), the bot rolls voxflow-api back to v1.2.3 and forward to v1.2.4 on the
fake Kubernetes API server, records the time to recover, shows it in
`/rollback drills`, in the next rollback modal's help and on App Home, and
uploads the RCA template with its timeline chart. Production refuses a drill.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import parse_config
from sandbox import platform
from sandbox.harness import Sandbox
from sandbox.kubernetes import FakeKubernetes
from sandbox.web import Reply, WebStub
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.waiting import wait_for

NAMESPACE, APP = "voxflow-staging", "voxflow-api"
IMAGES = ["voxflow/api:v1.2.2", "voxflow/api:v1.2.3", "voxflow/api:v1.2.4"]
STAGING, PROD = "C0STAGING1", "C0PRODUCT1"
PEOPLE = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _env(channel: str, kubeconfig: Path, web: str, **extra: Any) -> dict[str, Any]:
    return {
        "incident_channel": channel,
        "approvers": {"users": [BOB, CAROL]},
        "approvals_required": 2,  # a drill needs one unless drill_approvals_required says more
        "health_url": f"{web}/health",
        "targets": {
            "app": {
                "kind": "kubernetes",
                "namespace": NAMESPACE,
                "deployment": APP,
                "connection": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
                "rollout_timeout": 60,
            }
        },
        **extra,
    }


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Sandbox, FakeKubernetes]]:
    kube = FakeKubernetes(ready_delay=0.05).start()
    web = WebStub().start()
    sandbox = None
    try:
        kube.add_deployment(NAMESPACE, APP, images=IMAGES, replicas=2)
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        web.route("GET", "/health", Reply(200, json={"status": "ok"}))
        raw = {
            "environments": {
                "staging": _env(STAGING, kubeconfig, web.url, drill_every="30d"),
                "prod": _env(PROD, kubeconfig, web.url),
            }
        }
        config = parse_config(raw, path=Path("drill.yml"))
        sandbox = Sandbox(config=config, workdir=tmp_path, people=PEOPLE, runner_poll_seconds=0.1)
        sandbox.start()
        yield sandbox, kube
    finally:
        if sandbox is not None:
            sandbox.stop()
        web.stop()
        kube.stop()


def image_of(kube: FakeKubernetes) -> str:
    return str(
        kube.deployment(NAMESPACE, APP)["spec"]["template"]["spec"]["containers"][0]["image"]
    )


def ephemerals(sandbox: Sandbox, channel: str, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals(channel) if e.user == user]


def plan_in(sandbox: Sandbox, channel: str) -> Any:
    return next(
        (m for m in sandbox.slack.messages(channel) if m.text.startswith("Rollback drill plan")),
        None,
    )


def block_texts(blocks: list[dict[str, Any]]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
    return "\n".join(parts)


def test_a_drill_rolls_back_and_forward_and_its_time_shows_in_the_next_modal(
    world: tuple[Sandbox, FakeKubernetes],
) -> None:
    sandbox, kube = world
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    answer = alice.slash("drill app staging", channel=STAGING)
    assert answer.status_code == 200 and "Planning the drill of app in staging" in answer.text
    plan = wait_for(lambda: plan_in(sandbox, STAGING), what="the drill's plan message")
    assert plan.text == "Rollback drill plan for app in staging: approval needed"
    plan_text = block_texts(plan.blocks)
    assert plan_text.startswith("*Rollback drill plan* in *staging*")
    assert "1. Drill marker: record what app runs now (3)" in plan_text
    assert "5. Roll app forward to 3 · _forward_" in plan_text
    stored = sandbox.process.store.runs.find()[0].plan
    assert "from revision 4 to revision 3" in stored[4]["description"]  # renumbered by then

    bob.click(STAGING, plan.ts, "approve_run")  # one approver is enough for a drill
    store = sandbox.process.store
    run = wait_for(
        lambda: (r := store.runs.find()[0]).state in ("succeeded", "failed") and r, what="the drill"
    )
    assert run.state == "succeeded", run.outcome
    assert image_of(kube) == IMAGES[-1]  # forward again to what ran before the drill
    names = [s.name for s in store.steps.of(run.id)]
    assert names[0] == "drill.marker"
    assert names.count("kubernetes.rollout_undo") == 2

    drill = wait_for(lambda: (d := store.drills.get(run.id)) and d.state == "succeeded" and d)
    assert drill.recover_seconds is not None and drill.forward_seconds is not None
    assert set(drill.targets) == {"app"}
    assert [s["part"] for s in drill.steps][:2] == ["marker", "rollback"]
    assert drill.from_version.startswith("rev 3") and drill.to_version.startswith("rev 2")

    listing = alice.slash("drills", channel=STAGING).json()
    listed = block_texts(listing["blocks"])
    assert "app in staging: last drill" in listed and "time to recover" in listed
    assert ":white_check_mark:" in listed

    alice.slash("app prod", channel=PROD)
    view_id = alice.opened_view()
    view = wait_for(
        lambda: (v := sandbox.slack.view(view_id)).updates and v.view, what="the rollback modal"
    )
    fixable = next(b for b in view["blocks"] if b.get("block_id") == "q_fixable_quickly")
    assert fixable["hint"]["text"].startswith("Rolling back app took ")
    assert "in the last drill in staging" in fixable["hint"]["text"]

    said = wait_for(
        lambda: next((m.text for m in thread_of(sandbox, run) if "Drill measured" in m.text), None),
        what="the drill's measurements in its thread",
    )
    assert "rolling back app took *" in said and "1. Drill marker" in said
    # A drill looks like a drill: its card, its line in the channel, no incident RCA.
    card = next(m for m in sandbox.slack.messages(STAGING) if m.ts == run.slack["thread_ts"])
    assert card.blocks[0]["text"]["text"].startswith(f"Drill {run.incident_id} · rehearsal")
    line = wait_for(
        lambda: next(
            (m.text for m in sandbox.slack.messages(STAGING) if "went back" in m.text), None
        ),
        what="the drill's line in the channel",
    )
    assert line.startswith(
        f":large_green_circle: Drill {run.incident_id}: app went back and forward"
    )
    assert not [f for f in sandbox.slack.files() if f.name.endswith("-rca.md")]

    home = open_home(sandbox, BOB)
    assert "Drills and recovery times" in home and "app in staging: last drill" in home


def thread_of(sandbox: Sandbox, run: Any) -> list[Any]:
    return list(sandbox.slack.thread(STAGING, run.slack["thread_ts"]))


def open_home(sandbox: Sandbox, user: str) -> str:
    event = {
        "token": "unused",
        "team_id": "T0SANDBOX",
        "api_app_id": "A0SANDBOX",
        "type": "event_callback",
        "event_id": f"Ev{user}",
        "event_time": 1,
        "event": {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home"},
    }
    sandbox.platform.post(json.dumps(event).encode(), "application/json")
    return block_texts(
        wait_for(lambda: sandbox.slack.home(user), what="the home tab").view["blocks"]
    )


def test_a_drill_in_production_is_refused_and_nothing_is_recorded(
    world: tuple[Sandbox, FakeKubernetes],
) -> None:
    sandbox, kube = world
    answer = sandbox.person(ALICE).slash("drill app prod", channel=PROD)
    assert answer.status_code == 200
    said = answer.json()["text"]
    assert "drills are not allowed in prod" in said and "drills_allowed: true" in said
    store = sandbox.process.store
    assert store.runs.find() == [] and store.drills.find() == []
    assert image_of(kube) == IMAGES[-1]


def test_drills_lists_never_drilled_targets_flagged(world: tuple[Sandbox, FakeKubernetes]) -> None:
    sandbox, _ = world
    listing = sandbox.person(ALICE).slash("drills", channel=STAGING).json()
    listed = block_texts(listing["blocks"])
    assert ":warning: app in staging: never drilled" in listed
    assert "prod" not in listed.split("due:")[0]  # production is not drilled, so not listed


def test_recovery_metrics_are_exported_after_an_incident_run(
    world: tuple[Sandbox, FakeKubernetes],
) -> None:
    sandbox, _ = world
    url = sandbox.platform.bot_url.replace("/slack/events", "/metrics")
    body = httpx.get(url, timeout=10).text
    assert "# TYPE rollback_recovery_phase_seconds histogram" in body
    assert "# TYPE rollback_drill_recover_seconds gauge" in body


def test_a_drill_command_is_acked_before_it_is_recorded_and_a_retry_drills_once(
    world: tuple[Sandbox, FakeKubernetes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The once-only record is written after the ack (another session holds SQLite's write
    lock meanwhile); the same command sent again is answered from memory and plans nothing
    more."""
    sandbox, _ = world
    alice = sandbox.person(ALICE)
    monkeypatch.setattr(platform, "_trigger", lambda: "1700000000.123456789012.drill")
    path = sandbox.settings.database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    try:
        answer = alice.slash("drill app staging", channel=STAGING)
        recorded_while_locked = sandbox.process.store.runs.find()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 200 and "Planning the drill of app in staging" in answer.text
    assert recorded_while_locked == []
    wait_for(lambda: plan_in(sandbox, STAGING), what="the drill's plan message")
    again = alice.slash("drill app staging", channel=STAGING)  # the same trigger id: a retry
    assert "already received" in again.json()["text"]
    assert len(sandbox.process.store.runs.find()) == 1
