"""Alertmanager's webhook raises a Critical incident; the veto window is the team's last word."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.application.failures import disarmed_by
from bot.execution.workflow import Refused
from handlers.flows import flows_for
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.home import open_home
from tests.fakes.thread import card, plan_message, text_of
from tests.fakes.waiting import wait_for

TOKEN = "alert-token-1"


def alert(**labels: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "rollback-bot",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", **labels},
                "annotations": {"summary": "error rate 62% for 5m"},
                "startsAt": "2026-11-24T02:55:00.123456789Z",
            }
        ],
    }


def post(sandbox: Sandbox, body: Any, token: str = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(sandbox.alerts_url, json=body, headers=headers, timeout=30)


def test_firing_alert_opens_a_critical_incident_thread(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = post(sandbox, alert(environment="prod", target="app"))
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["opened"] and result["incident"].startswith("INC-")
    wait_for(lambda: plan_message(sandbox), what="the plan in the thread")
    shown = text_of(card(sandbox))
    assert "Critical" in shown and "HighErrorRate: error rate 62% for 5m" in shown
    # Monitoring answers no flowchart question: the card says why it opened, not a prompt.
    assert "Answer:" not in shown and "Is data at risk?" not in shown
    assert "No recommendation: the flowchart's questions were not answered." in shown
    incident = sandbox.process.store.incidents.get(result["incident"])
    assert incident is not None and f"{incident.detected_at:%H:%M:%S}" == "02:55:00"


def test_auto_rollback_runs_after_the_veto_window(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=0.5)
    post(sandbox, alert(environment="prod", target="app"))
    plan = wait_for(lambda: plan_message(sandbox), what="the plan in the thread")
    assert "Monitoring rolls back automatically at" in text_of(plan)
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the automatic rollback")
    assert "Approved by monitoring" in text_of(card(sandbox))


def test_an_approver_can_veto_the_automatic_rollback(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=30)
    post(sandbox, alert(environment="prod", target="app"))
    plan = wait_for(lambda: plan_message(sandbox), what="the plan in the thread")
    sandbox.person(BOB).click(CHANNEL, plan.ts, "reject_run")
    wait_for(lambda: "Rejected" in text_of(card(sandbox)), what="the veto on the card")
    assert sandbox.process.store.runs.find()[0].state == "rejected"


def test_repeated_alert_does_not_open_a_second_incident(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    first = post(sandbox, alert(environment="prod", target="app")).json()["results"][0]
    second = post(sandbox, alert(environment="prod", target="app")).json()["results"][0]
    assert second["incident"] == first["incident"] and second["opened"] is False
    assert len(sandbox.process.store.runs.find()) == 1


def test_wrong_token_gets_401_and_changes_nothing(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = post(sandbox, alert(environment="prod", target="app"), token="guess")
    assert response.status_code == 401
    assert sandbox.process.store.runs.find() == []


def test_malformed_body_gets_400_saying_why(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = post(sandbox, {"status": "firing"})
    assert response.status_code == 400
    assert "not an Alertmanager webhook body" in response.json()["error"]
    assert sandbox.process.store.runs.find() == []


def test_alerts_naming_nothing_known_are_ignored_with_the_reason(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    body = alert(environment="prod", target="api")
    body["alerts"].append({"status": "resolved", "labels": {"alertname": "Old"}})
    body["alerts"].append({"status": "firing", "labels": {"alertname": "NoLabels"}})
    results = post(sandbox, body).json()["results"]
    assert results[0]["ignored"].startswith("unknown target 'api' in prod")
    assert results[1] == {"alert": "Old", "ignored": "labels must name 'environment' and 'target'"}
    assert "must name 'environment' and 'target'" in results[2]["ignored"]
    assert sandbox.process.store.runs.find() == []


def test_webhook_is_off_without_a_token(sandbox: Sandbox) -> None:
    response = post(sandbox, alert(environment="prod", target="app"))
    assert response.status_code == 404
    assert "set ALERT_WEBHOOK_TOKEN" in response.json()["error"]


def test_the_bots_own_poller_opens_an_incident_when_the_error_rate_crosses(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    from sandbox.web import Reply, WebStub

    with WebStub() as metrics:
        metrics.route(
            "GET",
            "/error-rate",
            Reply(200, json={"error_rate": 3}),
            Reply(200, json={"error_rate": 62}),
        )
        sandbox = make_sandbox(
            metrics={"error_rate_url": f"{metrics.url}/error-rate"},
            monitoring={"target": "app", "poll_seconds": 0.2},
        )
        wait_for(lambda: plan_message(sandbox), what="the poller's incident")
        assert "Error rate is 62% (threshold: 50%)" in text_of(card(sandbox))
        assert len(metrics.calls("GET", "/error-rate")) >= 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"alerts": [{"labels": ["environment", "prod"]}]}, "alerts[0].labels is not an object"),
        ({"alerts": [{"labels": {"environment": 1}}]}, "alerts[0].labels.environment is not a"),
        (
            {"alerts": [{"labels": {"target": "app"}, "annotations": "summary"}]},
            "alerts[0].annotations is not an object",
        ),
        ({"alerts": [{"annotations": {"summary": {"x": 1}}}]}, "annotations.summary is not a"),
        ({"alerts": [{"status": "maybe"}]}, "alerts[0].status must be 'firing' or 'resolved'"),
        ({"alerts": [{"startsAt": 5}]}, "alerts[0].startsAt is not a string"),
        ({"alerts": "all"}, "'alerts' is missing or not a list"),
        ([1, 2], "the body is not a JSON object"),
        ({"alerts": [alert(environment="prod", target="app")["alerts"][0], 7]}, "alerts[1] is"),
    ],
)
def test_wrong_types_get_400_with_the_field_and_change_nothing(
    make_sandbox: Callable[..., Sandbox], body: Any, reason: str
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = post(sandbox, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert sandbox.process.store.runs.find() == []


def test_deeply_nested_json_and_non_json_get_400(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for body, reason in [
        (b'{"alerts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than"),
        (b'{"alerts": [' + b'{"labels": {"a": "[[[[[[[[[[[[["}},' * 3 + b"{}]}", None),
        (b"\xff\xfe not json", "not JSON"),
    ]:
        response = httpx.post(sandbox.alerts_url, content=body, headers=headers, timeout=30)
        if reason is None:  # brackets inside strings are not nesting
            assert response.status_code == 200
            continue
        assert response.status_code == 400 and reason in response.json()["error"]
    assert sandbox.process.store.runs.find() == []


def test_a_body_over_the_limit_gets_413(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    body = alert(environment="prod", target="app")
    body["alerts"][0]["annotations"]["description"] = "x" * 5_000_000
    response = post(sandbox, body)
    assert response.status_code == 413
    assert sandbox.process.store.runs.find() == []


def test_a_resolved_alert_is_recorded_on_the_open_incident(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    opened = post(sandbox, alert(environment="prod", target="app")).json()["results"][0]
    resolved = alert(environment="prod", target="app")
    resolved["alerts"][0].update(status="resolved", endsAt="2026-11-24T03:10:00Z")
    (result,) = post(sandbox, resolved).json()["results"]
    assert result == {
        "alert": "HighErrorRate",
        "incident": opened["incident"],
        "recorded": "resolved",
    }
    last = sandbox.process.store.events.of(opened["incident"])[-1]
    assert last.kind == "monitoring.resolved"
    assert last.detail == {"alert": "HighErrorRate", "ended_at": "2026-11-24T03:10:00Z"}


@pytest.mark.postgres
def test_an_alert_storm_on_two_bot_processes_leaves_one_incident_record(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy
    from pydantic import SecretStr

    from bot.app import BotProcess
    from bot.config import parse_config
    from bot.execution.planner import Planner
    from bot.persistence.store import make_engine, upgrade
    from bot.settings import Settings
    from sandbox.slack import FakeSlack
    from tests.fakes.config import config_dict
    from tests.fakes.database import postgres_database
    from tests.fakes.targets import ScriptedTarget, write_script

    script = write_script(tmp_path / "script.json")
    config = parse_config(config_dict(), path=Path("t.yml"))
    with postgres_database() as url, FakeSlack() as slack:
        slack.add_channel("incidents", channel_id=CHANNEL, members=[BOB])
        upgrade(make_engine(url))
        settings = Settings(
            slack_bot_token=SecretStr(slack.token),
            slack_signing_secret=SecretStr("s"),
            slack_api_url=slack.url,
            alert_webhook_token=SecretStr(TOKEN),
            database_url=url,
        )
        bots = [
            BotProcess(
                settings=settings,
                config=config,
                planner=Planner(factory=lambda params: ScriptedTarget(script)),
            )
            for _ in range(2)
        ]
        urls = [
            f"http://{h}:{p}/alerts" for h, p in (bot.start_http("127.0.0.1", 0) for bot in bots)
        ]
        try:
            body = alert(environment="prod", target="app")
            headers = {"Authorization": f"Bearer {TOKEN}"}

            def fire(index: int) -> int:
                url = urls[index % 2]
                return client.post(url, json=body, headers=headers).status_code

            # One client for the storm: a client per request would load the CA bundle 400 times.
            with httpx.Client(timeout=60) as client, ThreadPoolExecutor(max_workers=16) as pool:
                statuses = list(pool.map(fire, range(400)))
            assert set(statuses) == {200}
            engine = sqlalchemy.create_engine(url)
            with engine.connect() as conn:
                incidents = conn.execute(sqlalchemy.text("SELECT id FROM incidents")).all()
                runs = conn.execute(sqlalchemy.text("SELECT incident_id FROM runs")).all()
                alerts = conn.execute(
                    sqlalchemy.text("SELECT count(*) FROM events WHERE kind = 'monitoring.alert'")
                ).scalar_one()
            engine.dispose()
            assert len(incidents) == 1
            assert [r[0] for r in runs] == [incidents[0][0]]
            assert alerts == 399
        finally:
            for bot in bots:
                bot.stop()


@pytest.mark.parametrize("auto_rollback", [False, True], ids=["person", "auto"])
def test_an_alert_whose_thread_slack_refuses_leaves_no_run_and_frees_the_target(
    make_sandbox: Callable[..., Sandbox], auto_rollback: bool
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=auto_rollback, veto_seconds=0.5)
    sandbox.slack.fail_next("chat.postMessage", error="not_in_channel", status=200)
    response = post(sandbox, alert(environment="prod", target="app"))
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert not result["opened"] and "not_in_channel" in result["message"]
    store = sandbox.process.store
    (run,) = store.runs.find()
    assert run.state == "cancelled" and run.incident_id == result["incident"]
    assert store.runs.lock_holder(environment="prod", targets=["app"]) is None
    sandbox.process.monitor.approve_due()  # nothing left for monitoring to approve
    assert store.runs.get(run.id).state == "cancelled"  # type: ignore[union-attr]
    again = post(sandbox, alert(environment="prod", target="app")).json()["results"][0]
    assert again["opened"] and again["incident"] != run.incident_id
    wait_for(lambda: plan_message(sandbox), what="the plan in the new thread")


def test_an_automatic_rollback_disarms_automatic_rollback_until_an_approver_rearms_it(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    """A flapping alert never causes a second automatic rollback: after monitoring rolled a
    target back itself, the next alert's rollback waits for a person, and App Home says why,
    with a Re-arm button for approvers."""
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=0.2)
    store = sandbox.process.store
    post(sandbox, alert(environment="prod", target="app"))
    first = wait_for(
        lambda: (r := store.runs.find()[0]).state == "succeeded" and r,
        what="the automatic rollback",
    )
    home = open_home(sandbox, BOB)
    assert "Automatic rollback disarmed" in home and first.incident_id in home

    again = post(sandbox, alert(environment="prod", target="app", alertname="HighErrorRate2"))
    second = again.json()["results"][0]
    assert second["opened"], second
    incident = store.incidents.get(second["incident"])
    assert incident is not None
    assert (
        f"automatic rollback of app is disarmed since monitoring rolled it back itself in "
        f"{first.incident_id}" in incident.summary
    )
    newest = store.runs.find()[0]
    assert newest.incident_id == second["incident"] and newest.auto_approve_at is None

    with pytest.raises(Refused, match="only an approver"):
        flows_for(sandbox.process.deps).failures.rearm(first.id, user=ALICE)
    flows_for(sandbox.process.deps).failures.rearm(first.id, user=BOB)
    (event,) = [e for e in store.events.of(first.incident_id) if e.kind == "auto.rearmed"]
    assert event.actor == BOB
    assert disarmed_by(store, environment="prod", target="app") is None
    assert "Automatic rollback disarmed" not in open_home(sandbox, BOB)
