"""What a scheduled drill reports besides its measurements: the trend chart in its thread,
and an overdue drill in the environment's incident channel, once a period.

Through the sandbox (the real Bolt app over HTTP, fake Slack, the runner loop): the
scheduler drills app in staging itself on the Kubernetes stand-in, and its report uploads
the trend chart (a PNG whose Description names its series). An alert then holds the target;
its drill is made ten days old, so the scheduler skips it (held) and it is overdue: one
message in the channel, not repeated on the next passes nor by a second scheduler on the
same database. The chart's series, the period arithmetic and the words on their own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.application.chart import trend_chart
from bot.application.drill_schedule import (
    NOT_STARTED,
    OVERDUE,
    DrillSchedules,
    overdue_detail,
    overdue_period,
)
from bot.config import DrillSchedule, parse_config
from bot.persistence.models import Drill
from handlers.drill_blocks import overdue_text
from handlers.flows import drills_for
from sandbox.harness import Sandbox
from sandbox.kubernetes import FakeKubernetes
from sandbox.web import Reply, WebStub
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.rows import set_drill_fields
from tests.fakes.waiting import wait_for

NAMESPACE, APP = "voxflow-staging", "voxflow-api"
STAGING = "C0STAGING1"
TOKEN = "overdue-alert-token"
WEEKLY = DrillSchedule(every=timedelta(days=7), at="Tue 10:00")
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Sandbox, FakeKubernetes]]:
    kube = FakeKubernetes(ready_delay=0.05).start()
    web = WebStub().start()
    sandbox = None
    try:
        kube.add_deployment(NAMESPACE, APP, images=["api:v1", "api:v2"], replicas=2)
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        web.route("GET", "/health", Reply(200, json={"status": "ok"}))
        staging = {
            "incident_channel": STAGING,
            "approvers": {"users": [BOB, CAROL]},
            "health_url": f"{web.url}/health",
            "targets": {
                "app": {
                    "kind": "kubernetes",
                    "namespace": NAMESPACE,
                    "deployment": APP,
                    "connection": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
                    "rollout_timeout": 60,
                    "drills": {"every": "7d", "at": "10:00"},
                }
            },
        }
        config = parse_config({"environments": {"staging": staging}}, path=Path("d.yml"))
        people = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
        sandbox = Sandbox(
            config=config,
            workdir=tmp_path,
            people=people,
            runner_poll_seconds=0.1,
            alert_token=TOKEN,
        )
        sandbox.start()
        yield sandbox, kube
    finally:
        if sandbox is not None:
            sandbox.stop()
        web.stop()
        kube.stop()


def hold_with_an_alert(sandbox: Sandbox) -> None:
    body: dict[str, Any] = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "environment": "staging", "target": "app"},
                "annotations": {"summary": "error rate 40%"},
            }
        ],
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = httpx.post(sandbox.alerts_url, json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def overdue_messages(sandbox: Sandbox) -> list[Any]:
    return [m for m in sandbox.slack.messages(STAGING) if "*Drill overdue*" in m.text]


def test_an_overdue_scheduled_drill_is_said_in_the_channel_once_a_period(
    world: tuple[Sandbox, FakeKubernetes],
) -> None:
    sandbox, _ = world
    store = sandbox.process.store
    (drill,) = wait_for(
        lambda: [d for d in store.drills.find() if d.state == "succeeded"],
        timeout=60,
        what="the scheduler's first drill of app",
    )
    assert overdue_messages(sandbox) == []  # drilled just now
    hold_with_an_alert(sandbox)
    wait_for(lambda: len(store.runs.find()) == 2, what="the incident holding app")
    ten_days_ago = store.clock() - timedelta(days=10)
    set_drill_fields(store, drill.run_id, created_at=ten_days_ago, finished_at=ten_days_ago)

    (said,) = wait_for(lambda: overdue_messages(sandbox), what="the overdue message")
    beat = sandbox.process.last_beat
    wait_for(lambda: sandbox.process.last_beat > beat + 0.3, what="a few more runner passes")
    again = DrillSchedules(drills_for(sandbox.process.deps))  # a restart, a replica

    assert again.tell_overdue(store.clock()) == []
    assert overdue_messages(sandbox) == [said]
    assert said.thread_ts is None  # in the channel, not in the old drill's thread
    assert said.text.startswith(":warning: *Drill overdue*: app in staging has had no ")
    assert "scheduled every 7 days;" in said.text and "the last one succeeded" in said.text
    (queued,) = [m for m in store.outbox.messages(drill.run_id) if m.kind == OVERDUE]
    assert queued.state == "sent"
    assert [d.run_id for d in store.drills.find()] == [drill.run_id]  # held: no new drill started


def described(png: bytes) -> str:
    image = Image.open(io.BytesIO(png))
    image.verify()  # a whole, valid PNG
    return str(Image.open(io.BytesIO(png)).info["Description"])


def test_a_drill_report_uploads_the_trend_chart_into_its_thread(
    world: tuple[Sandbox, FakeKubernetes],
) -> None:
    sandbox, _ = world
    store = sandbox.process.store
    (drill,) = wait_for(
        lambda: [d for d in store.drills.find() if d.state == "succeeded"],
        timeout=60,
        what="the scheduler's first drill of app",
    )
    run = store.runs.get(drill.run_id)
    assert run is not None

    chart = wait_for(
        lambda: next(
            (f for f in sandbox.slack.files() if f.name == f"{run.incident_id}-trend.png"), None
        ),
        what="the trend chart",
    )

    assert chart.content.startswith(PNG_SIGNATURE)
    assert described(chart.content) == "series: drills: time to recover (1)"
    assert (chart.channel, chart.thread_ts) == (STAGING, run.slack["thread_ts"])
    assert str(chart.initial_comment).startswith(
        "Time to recover of app in staging over its last drills and real rollbacks, oldest "
        "first: one drill so far, "
    )
    assert len([f for f in sandbox.slack.files() if f.name.endswith("-trend.png")]) == 1


def test_the_trend_chart_draws_each_series_given_with_points_and_leaves_out_empty_ones() -> None:
    both = trend_chart(
        "db in staging",
        [("drills: time to recover", (250.0, 500.0, 1000.0)), ("real rollbacks", (600.0,))],
        rto=900.0,
    )
    drills_only = trend_chart("db", [("drills", (60.0,)), ("real rollbacks", ())])

    assert both.series == (("drills: time to recover", 3), ("real rollbacks", 1))
    assert described(both.png) == "series: drills: time to recover (3); real rollbacks (1)"
    assert drills_only.series == (("drills", 1),)
    assert described(drills_only.png) == "series: drills (1)"


def drill(state: str, started: datetime, *, took: float | None = 60.0) -> Drill:
    return Drill(
        run_id=f"r-{started:%d%H}",
        environment="staging",
        target="app",
        state=state,
        created_at=started,
        finished_at=started + timedelta(minutes=5),
        recover_seconds=took if state == "succeeded" else None,
        steps=[],
    )


def test_a_target_is_overdue_a_period_after_its_last_success_and_each_period_after() -> None:
    succeeded = drill("succeeded", NOW - timedelta(days=9))
    ended = succeeded.finished_at
    assert ended is not None

    assert overdue_period([succeeded], WEEKLY, now=NOW) == ended + timedelta(days=7)
    assert overdue_period([succeeded], WEEKLY, now=NOW + timedelta(days=7)) == ended + timedelta(
        days=14
    )
    assert overdue_period([drill("succeeded", NOW - timedelta(days=6))], WEEKLY, now=NOW) is None


def test_a_drill_in_flight_or_none_at_all_is_not_told_and_failures_count_from_the_first() -> None:
    old = drill("succeeded", NOW - timedelta(days=20))
    running = drill("running", NOW - timedelta(minutes=3))
    first_failed = drill("failed", NOW - timedelta(days=8))
    failed_again = drill("failed", NOW - timedelta(days=1))

    assert overdue_period([running, old], WEEKLY, now=NOW) is None
    assert overdue_period([], WEEKLY, now=NOW) is None
    assert overdue_period([failed_again, first_failed], WEEKLY, now=NOW) == (
        first_failed.created_at + timedelta(days=7)
    )
    assert overdue_period([failed_again], WEEKLY, now=NOW) is None  # one day of failing


def test_the_overdue_words_say_since_when_how_often_and_the_last_drill() -> None:
    failed = drill("failed", NOW - timedelta(days=8))
    period = overdue_period([failed], WEEKLY, now=NOW)
    assert period is not None

    text = overdue_text(overdue_detail("staging", "app", [failed], WEEKLY, period))

    assert text.startswith(
        ":warning: *Drill overdue*: app in staging has had no successful drill yet "
        "(the first was tried <!date^"
    )
    assert "scheduled every 7 days; the last one failed <!date^" in text
    assert text.endswith("or run `/rollback drill app staging`.")


def test_a_scheduled_drill_that_could_not_start_is_said_in_the_channel_once_a_slot(
    world: tuple[Sandbox, FakeKubernetes],
) -> None:
    sandbox, _ = world
    store = sandbox.process.store
    detail = {
        "environment": "staging",
        "target": "app",
        "slot": "2026-12-08T10:00:00+00:00",
        "reason": "the drill could not be planned: <!channel> no revision to drill",
        "never_drilled": True,
    }
    store.outbox.enqueue(None, NOT_STARTED, detail)  # two replicas that both found it not started
    store.outbox.enqueue(None, NOT_STARTED, detail)
    sandbox.process.sender.wake.set()

    wait_for(
        lambda: (
            [m.state for m in store.outbox.messages(None, kind=NOT_STARTED)] == ["sent", "sent"]
        ),
        what="both messages delivered",
    )
    (said,) = [m for m in sandbox.slack.messages(STAGING) if "not started" in m.text]
    assert said.thread_ts is None
    assert said.text.startswith(":warning: *Scheduled drill not started*: app in staging, due ")
    assert "&lt;!channel&gt; no revision to drill." in said.text  # hostile text is not a ping
    assert "It has never been drilled" in said.text
