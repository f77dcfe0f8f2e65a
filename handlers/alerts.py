"""The monitoring webhook: Alertmanager's JSON over HTTP, separate from Slack.

`POST /alerts` with `Authorization: Bearer <ALERT_WEBHOOK_TOKEN>` and
Alertmanager's webhook body. Every firing alert whose labels name a
configured `environment` and `target` raises a Critical incident through
`bot.monitoring.Monitor` (once per busy target); resolved alerts and alerts
naming nothing we know are reported back as ignored, with the reason, so
whoever wires Alertmanager up sees at once what the bot made of each alert.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from actions.base import ActionError
from bot.config import UnknownTarget
from bot.monitoring import Monitor
from bot.store import TargetBusy

log = logging.getLogger(__name__)
MAX_BODY = 1_000_000


class AlertWebhook:
    """A WSGI endpoint for Alertmanager."""

    def __init__(self, monitor: Monitor, *, token: str) -> None:
        self.monitor = monitor
        self.token = token

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status, body = self.handle(environ)
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def handle(self, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Answer one request: (HTTP status line, JSON body)."""
        if not self.token:
            return "404 Not Found", {"error": "alert webhook disabled: set ALERT_WEBHOOK_TOKEN"}
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"error": "POST Alertmanager's webhook JSON here"}
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return "401 Unauthorized", {"error": "missing or wrong bearer token"}
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
            payload = json.loads(environ["wsgi.input"].read(length) or b"null")
            alerts = payload["alerts"]
            if not isinstance(alerts, list):
                raise TypeError("'alerts' is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            return "400 Bad Request", {"error": f"not an Alertmanager webhook body: {exc}"}
        results = [self._one(alert) for alert in alerts]
        return "200 OK", {"results": results}

    def _one(self, alert: Any) -> dict[str, Any]:
        if not isinstance(alert, dict):
            return {"ignored": "an alert is not an object"}
        labels = alert.get("labels") or {}
        name = labels.get("alertname", "alert")
        if alert.get("status", "firing") != "firing":
            return {"alert": name, "ignored": "resolved"}
        environment, target = labels.get("environment"), labels.get("target")
        if not environment or not target:
            return {"alert": name, "ignored": "labels must name 'environment' and 'target'"}
        annotations = alert.get("annotations") or {}
        reason = annotations.get("summary") or annotations.get("description") or name
        try:
            raised = self.monitor.raise_incident(
                environment=str(environment),
                target=str(target),
                reason=f"{name}: {reason}",
                detected_at=_started(alert.get("startsAt")),
            )
        except (UnknownTarget, ActionError, TargetBusy) as exc:
            return {"alert": name, "ignored": str(exc)}
        return {
            "alert": name,
            "incident": raised.incident_id,
            "opened": raised.opened,
            "message": raised.message,
        }


def _started(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    # Alertmanager writes nanoseconds; Python reads at most microseconds.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        started = datetime.fromisoformat(value)
    except ValueError:
        return None
    return started if started.tzinfo else None
