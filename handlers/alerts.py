"""The monitoring webhook: Alertmanager's JSON over HTTP, separate from Slack.

`POST /alerts` with `Authorization: Bearer <ALERT_WEBHOOK_TOKEN>` and
Alertmanager's webhook body. Every firing alert whose labels name a
configured `environment` and `target` raises a Critical incident through
`bot.application.monitoring.Monitor` (once per busy target); a resolved one is recorded on
the target's incident; alerts naming nothing we know are reported back as
ignored, with the reason, so whoever wires Alertmanager up sees at once what
the bot made of each alert.

The body is checked whole before anything happens: a body over `MAX_BODY` is
413, anything that is not Alertmanager's shape (labels and annotations are
objects of strings, `status` is firing or resolved) is 400 naming the first
wrong field, and JSON nested deeper than Alertmanager ever writes is refused
before it is parsed, so no body can reach the error handler or change anything.
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
from bot.application.monitoring import Monitor
from bot.config import UnknownTarget
from bot.domain.states import TargetBusy

log = logging.getLogger(__name__)
MAX_BODY = 1_000_000
MAX_DEPTH = 8  # Alertmanager's body is 4 levels deep: body, alerts, alert, labels.
MAX_ALERTS = 1000


class BadBody(ValueError):
    """Not an Alertmanager webhook body; the message says where."""


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
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return "400 Bad Request", {"error": "Content-Length is not a number"}
        if length > MAX_BODY:
            return "413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"}
        data = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            alerts = _alerts(data)
        except BadBody as exc:
            return "400 Bad Request", {"error": f"not an Alertmanager webhook body: {exc}"}
        return "200 OK", {"results": [self._one(alert) for alert in alerts]}

    def _one(self, alert: dict[str, Any]) -> dict[str, Any]:
        labels: dict[str, str] = alert.get("labels") or {}
        name = labels.get("alertname", "alert")
        environment, target = labels.get("environment"), labels.get("target")
        if not environment or not target:
            return {"alert": name, "ignored": "labels must name 'environment' and 'target'"}
        try:
            if alert.get("status", "firing") == "resolved":
                return self._resolved(alert, name, environment, target)
            return self._firing(alert, name, environment, target)
        except (UnknownTarget, ActionError, TargetBusy) as exc:
            return {"alert": name, "ignored": str(exc)}

    def _resolved(
        self, alert: dict[str, Any], name: str, environment: str, target: str
    ) -> dict[str, Any]:
        incident = self.monitor.resolved(
            environment=environment,
            target=target,
            alert=name,
            ended_at=str(alert.get("endsAt") or ""),
        )
        if incident is None:
            return {"alert": name, "ignored": f"resolved, and no incident for {target}"}
        return {"alert": name, "incident": incident, "recorded": "resolved"}

    def _firing(
        self, alert: dict[str, Any], name: str, environment: str, target: str
    ) -> dict[str, Any]:
        annotations: dict[str, str] = alert.get("annotations") or {}
        reason = annotations.get("summary") or annotations.get("description") or name
        raised = self.monitor.raise_incident(
            environment=environment,
            target=target,
            reason=f"{name}: {reason}",
            detected_at=_started(alert.get("startsAt")),
        )
        return {
            "alert": name,
            "incident": raised.incident_id,
            "opened": raised.opened,
            "message": raised.message,
        }


def _alerts(data: bytes) -> list[dict[str, Any]]:
    """The body's alerts, each checked for Alertmanager's shape; BadBody otherwise."""
    _check_depth(data)
    try:
        payload = json.loads(data or b"null")
    except (ValueError, RecursionError) as exc:
        raise BadBody(f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise BadBody("the body is not a JSON object")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise BadBody("'alerts' is missing or not a list")
    if len(alerts) > MAX_ALERTS:
        raise BadBody(f"more than {MAX_ALERTS} alerts in one body")
    for index, alert in enumerate(alerts):
        _check_alert(alert, f"alerts[{index}]")
    return alerts


def _check_alert(alert: Any, where: str) -> None:
    if not isinstance(alert, dict):
        raise BadBody(f"{where} is not an object")
    if alert.get("status", "firing") not in ("firing", "resolved"):
        raise BadBody(f"{where}.status must be 'firing' or 'resolved'")
    for key in ("labels", "annotations"):
        value = alert.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadBody(f"{where}.{key} is not an object")
        for name, text in value.items():
            if not isinstance(text, str):
                raise BadBody(f"{where}.{key}.{name} is not a string")
    for key in ("startsAt", "endsAt"):
        if alert.get(key) is not None and not isinstance(alert[key], str):
            raise BadBody(f"{where}.{key} is not a string")


def _check_depth(data: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, counted on the bytes before parsing."""
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                raise BadBody(f"JSON nested deeper than {MAX_DEPTH} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


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
