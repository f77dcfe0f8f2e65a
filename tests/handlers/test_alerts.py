"""Alertmanager's webhook raises a Critical incident; the veto window is the team's last word."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from bot.sandbox.harness import Sandbox
from tests.bot.conftest import BOB
from tests.fakes.waiting import wait_for
from tests.handlers.conftest import CHANNEL, card, plan_message, text_of

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
    incident = sandbox.process.deps.store.incident(result["incident"])
    assert incident is not None and f"{incident.detected_at:%H:%M:%S}" == "02:55:00"


def test_auto_rollback_runs_after_the_veto_window(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=0.5)
    post(sandbox, alert(environment="prod", target="app"))
    plan = wait_for(lambda: plan_message(sandbox), what="the plan in the thread")
    assert "Monitoring rolls back automatically at" in text_of(plan)
    store = sandbox.process.deps.store
    wait_for(lambda: store.runs()[0].state == "succeeded", what="the automatic rollback")
    assert "Approved by monitoring" in text_of(card(sandbox))


def test_an_approver_can_veto_the_automatic_rollback(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN, auto_rollback=True, veto_seconds=30)
    post(sandbox, alert(environment="prod", target="app"))
    plan = wait_for(lambda: plan_message(sandbox), what="the plan in the thread")
    sandbox.person(BOB).click(CHANNEL, plan.ts, "reject_run")
    wait_for(lambda: "Rejected" in text_of(card(sandbox)), what="the veto on the card")
    assert sandbox.process.deps.store.runs()[0].state == "rejected"


def test_repeated_alert_does_not_open_a_second_incident(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    first = post(sandbox, alert(environment="prod", target="app")).json()["results"][0]
    second = post(sandbox, alert(environment="prod", target="app")).json()["results"][0]
    assert second["incident"] == first["incident"] and second["opened"] is False
    assert len(sandbox.process.deps.store.runs()) == 1


def test_wrong_token_gets_401_and_changes_nothing(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = post(sandbox, alert(environment="prod", target="app"), token="guess")
    assert response.status_code == 401
    assert sandbox.process.deps.store.runs() == []


def test_malformed_body_gets_400_saying_why(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = post(sandbox, {"status": "firing"})
    assert response.status_code == 400
    assert "not an Alertmanager webhook body" in response.json()["error"]
    assert sandbox.process.deps.store.runs() == []


def test_alerts_naming_nothing_known_are_ignored_with_the_reason(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    body = alert(environment="prod", target="api")
    body["alerts"].append({"status": "resolved", "labels": {"alertname": "Old"}})
    body["alerts"].append({"status": "firing", "labels": {"alertname": "NoLabels"}})
    results = post(sandbox, body).json()["results"]
    assert results[0]["ignored"].startswith("unknown target 'api' in prod")
    assert results[1] == {"alert": "Old", "ignored": "resolved"}
    assert "must name 'environment' and 'target'" in results[2]["ignored"]
    assert sandbox.process.deps.store.runs() == []


def test_webhook_is_off_without_a_token(sandbox: Sandbox) -> None:
    response = post(sandbox, alert(environment="prod", target="app"))
    assert response.status_code == 404
    assert "set ALERT_WEBHOOK_TOKEN" in response.json()["error"]


def test_the_bots_own_poller_opens_an_incident_when_the_error_rate_crosses(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    from bot.sandbox.web import Reply, WebStub

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
