"""Slack's side of the conversation: people sending signed requests to the bot.

The fake Web API (`sandbox.slack`) answers the bot; this module plays the
other half, what Slack's servers send to the bot's request URL when a person
types a slash command, clicks a button, picks an answer in a modal or
submits it. Payloads have Slack's real shapes (form-encoded slash commands,
`payload=` JSON for interactivity) and carry a real v0 signature, so the
bot's request verification runs as it does in production.

A `Person` keeps each open modal's state the way the Slack client does:
initial values first, then whatever they chose, sent with every action and
with the submission.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from sandbox.slack import FakeSlack

# One TLS context for every request: httpx builds a new one per call otherwise, loading the
# whole CA bundle each time (most of a request's cost to the plain-HTTP bot on loopback).
_TLS = ssl.create_default_context()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return Slack's v0 signature of a request body."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Platform:
    """Sends what Slack would send to the bot's request URL."""

    bot_url: str
    signing_secret: str
    slack: FakeSlack
    team_id: str = "T0SANDBOX"
    timeout: float = 30.0

    def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: str | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """POST a body, signed with `secret` (default: the real one) at `timestamp`."""
        stamp = timestamp or str(int(time.time()))
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(secret or self.signing_secret, stamp, body),
        }
        return httpx.post(
            self.bot_url, content=body, headers=headers, timeout=self.timeout, verify=_TLS
        )

    def form(self, fields: dict[str, str], **kwargs: Any) -> httpx.Response:
        """POST form fields (slash commands)."""
        return self.post(urlencode(fields).encode(), "application/x-www-form-urlencoded", **kwargs)

    def interaction(self, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
        """POST an interactivity payload."""
        return self.form({"payload": json.dumps(payload)}, **kwargs)

    def person(self, user_id: str, name: str) -> Person:
        """A person in this workspace."""
        return Person(self, user_id, name)


def _trigger() -> str:
    return f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:16]}"


@dataclass
class Person:
    """Someone typing, clicking and submitting in Slack."""

    platform: Platform
    user_id: str
    name: str
    states: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    last_trigger: str | None = None

    def _user(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "username": self.name,
            "name": self.name,
            "team_id": self.platform.team_id,
        }

    # slash commands -----------------------------------------------------------

    def slash(self, text: str, *, channel: str = "C0INCIDENT", **kwargs: Any) -> httpx.Response:
        """Type `/rollback <text>` in `channel`."""
        self.last_trigger = _trigger()
        fields = {
            "token": "verification-token-unused",
            "team_id": self.platform.team_id,
            "team_domain": "sandbox",
            "channel_id": channel,
            "channel_name": "incidents",
            "user_id": self.user_id,
            "user_name": self.name,
            "command": "/rollback",
            "text": text,
            "api_app_id": "A0SANDBOX",
            "is_enterprise_install": "false",
            "response_url": f"{self.platform.slack.base}/commands/response",
            "trigger_id": self.last_trigger,
        }
        return self.platform.form(fields, **kwargs)

    def opened_view(self, *, wait: float = 10.0) -> str:
        """Return the id of the modal opened with this person's last trigger."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for view in self.platform.slack.views():
                if view.trigger_id == self.last_trigger:
                    return view.id
            time.sleep(0.02)
        raise AssertionError(f"no modal was opened for {self.name}'s last command")

    # modals -------------------------------------------------------------------

    def view(self, view_id: str) -> dict[str, Any]:
        """The view as the client shows it now, with this person's state."""
        stored = self.platform.slack.view(view_id)
        state = self._state(view_id, stored.view)
        return {
            **stored.view,
            "id": stored.id,
            "hash": stored.hash,
            "type": "modal",
            "team_id": self.platform.team_id,
            "state": {"values": state},
        }

    def _state(self, view_id: str, content: dict[str, Any]) -> dict[str, dict[str, Any]]:
        state = self.states.setdefault(view_id, {})
        for block in content.get("blocks", []):
            element = block.get("element")
            if block.get("type") != "input" or not element:
                continue
            values = state.setdefault(block["block_id"], {})
            if element["action_id"] not in values:
                values[element["action_id"]] = _initial(element)
        return state

    def choose(self, view_id: str, block_id: str, value: str | list[str]) -> httpx.Response:
        """Pick an option (or options, or type text) in a modal input; dispatch the action."""
        view = self.view(view_id)
        block = _block(view, block_id)
        element = block["element"]
        entry = _entered(element, value)
        self.states[view_id][block_id][element["action_id"]] = entry
        view["state"]["values"][block_id][element["action_id"]] = entry
        if not block.get("dispatch_action"):
            return httpx.Response(200)
        action = {
            "action_id": element["action_id"],
            "block_id": block_id,
            "action_ts": str(time.time()),
            **entry,
        }
        return self.platform.interaction(self._actions_payload(view=view, actions=[action]))

    def submit(self, view_id: str) -> httpx.Response:
        """Press the modal's submit button."""
        payload = {
            "type": "view_submission",
            "team": {"id": self.platform.team_id, "domain": "sandbox"},
            "user": self._user(),
            "api_app_id": "A0SANDBOX",
            "token": "verification-token-unused",
            "trigger_id": _trigger(),
            "view": self.view(view_id),
            "response_urls": [],
            "is_enterprise_install": False,
        }
        return self.platform.interaction(payload)

    # messages -----------------------------------------------------------------

    def click(self, channel: str, ts: str, action_id: str) -> httpx.Response:
        """Click the button `action_id` on a message."""
        return self.platform.interaction(self.click_payload(channel, ts, action_id))

    def click_payload(self, channel: str, ts: str, action_id: str) -> dict[str, Any]:
        """The payload a click on the message as it reads now sends (sent again: a retry)."""
        message = self.platform.slack.message(channel, ts)
        block, element = _element(list(message.blocks), action_id)
        action = {
            "action_id": action_id,
            "block_id": block["block_id"],
            "type": "button",
            "value": element.get("value"),
            "text": element.get("text"),
            "action_ts": str(time.time()),
        }
        return self._message_payload(message, [action])

    def tick(self, channel: str, ts: str, action_id: str, values: list[str]) -> httpx.Response:
        """Set the ticked boxes of a message's checkboxes."""
        message = self.platform.slack.message(channel, ts)
        block, element = _element(list(message.blocks), action_id)
        options = [o for o in element["options"] if o["value"] in values]
        action = {
            "action_id": action_id,
            "block_id": block["block_id"],
            "type": "checkboxes",
            "selected_options": options,
            "action_ts": str(time.time()),
        }
        return self.platform.interaction(self._message_payload(message, [action]))

    def _message_payload(self, message: Any, actions: list[dict[str, Any]]) -> dict[str, Any]:
        container = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": self._user(),
            "api_app_id": "A0SANDBOX",
            "token": "verification-token-unused",
            "container": container,
            "trigger_id": _trigger(),
            "team": {"id": self.platform.team_id, "domain": "sandbox"},
            "channel": {"id": message.channel, "name": "incidents"},
            "message": {
                "type": "message",
                "ts": message.ts,
                "text": message.text,
                "blocks": list(message.blocks),
                "thread_ts": message.thread_ts,
            },
            "response_url": f"{self.platform.slack.base}/actions/response",
            "actions": actions,
        }

    def _actions_payload(self, *, view: dict[str, Any], actions: list[Any]) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "user": self._user(),
            "api_app_id": "A0SANDBOX",
            "token": "verification-token-unused",
            "container": {"type": "view", "view_id": view["id"]},
            "trigger_id": _trigger(),
            "team": {"id": self.platform.team_id, "domain": "sandbox"},
            "view": view,
            "actions": actions,
        }


def _initial(element: dict[str, Any]) -> dict[str, Any]:
    kind = element["type"]
    if kind in ("radio_buttons", "static_select"):
        return {"type": kind, "selected_option": element.get("initial_option")}
    if kind == "checkboxes":
        return {"type": kind, "selected_options": element.get("initial_options") or []}
    return {"type": kind, "value": element.get("initial_value")}


def _entered(element: dict[str, Any], value: str | list[str]) -> dict[str, Any]:
    kind = element["type"]
    options = element.get("options") or []
    if kind in ("radio_buttons", "static_select"):
        chosen = next((o for o in options if o["value"] == value), None)
        if chosen is None:
            raise AssertionError(f"no option {value!r} in {element['action_id']}")
        return {"type": kind, "selected_option": chosen}
    if kind == "checkboxes":
        wanted = [value] if isinstance(value, str) else value
        return {"type": kind, "selected_options": [o for o in options if o["value"] in wanted]}
    return {"type": kind, "value": value}


def _block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    for block in view.get("blocks", []):
        if block.get("block_id") == block_id:
            return dict(block)
    raise AssertionError(f"the modal has no block {block_id!r}")


def _element(blocks: list[dict[str, Any]], action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for block in blocks:
        elements = list(block.get("elements") or [])
        if block.get("accessory"):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block, element
    raise AssertionError(f"no element {action_id!r} on the message")
