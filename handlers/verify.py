"""Slack's request URL guard: nothing unverified or unreadable reaches Bolt.

Bolt verifies signatures itself, but too late and too trustingly: a
non-numeric `X-Slack-Request-Timestamp` raises inside its verifier, a body
that is not JSON raises while the request is parsed, and a `user` that is a
number raises while the context is built. Each of those reached the app's
error handler, which answered 500 and posted "Something went wrong" to a user
and channel read from the unverified body. So the HTTP entry point is
`SlackEndpoint`, a WSGI app of our own in front of `App.dispatch` that, in
this order,

1. reads the body (no length, more than `MAX_BODY` bytes, not UTF-8: 411/413/400),
2. checks the timestamp is a number within five minutes and the v0 signature
   matches (`slack_sdk.signature.SignatureVerifier`, the same check Slack
   documents at https://api.slack.com/authentication/verifying-requests-from-slack):
   otherwise 401,
3. parses the body the way Bolt will (`slack_bolt/request/internals.py`
   `parse_body`: JSON when the content type says so or it starts with `{`,
   else form fields, a `payload` field holding JSON) and checks the envelope
   fields Bolt reads before any listener runs (`build_context`,
   `payload_utils.to_action` / `to_view`): otherwise 400,
4. hands Bolt the request (`BoltRequest`, which parses the body again: the
   price of Bolt's public API) and answers with Bolt's answer, as Bolt's WSGI
   adapter (`slack_bolt/adapter/wsgi/handler.py`) does.

Each refusal is one warning log line with the reason, no traceback, and a
short plain-text reason in the answer; nothing is posted anywhere.

Socket Mode requests come authenticated over Slack's own connection, so only
step 3 applies there: `EnvelopeGuard` is the same check as a Bolt global
middleware. What a listener reads beyond the envelope (button values,
private_metadata, form state) is parsed by the listener into a typed request,
with a clear answer to the person when it does not fit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt import App
from slack_bolt.middleware import Middleware
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
_PLAIN = [("Content-Type", "text/plain; charset=utf-8")]
_NAMED = ("user", "channel", "team", "enterprise")
_OBJECTS = ("view", "event", "message", "container", "previous_message", "item")


class Rejected(Exception):
    """A request that is answered with `status` and `reason` and goes no further."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SlackEndpoint:
    """Slack's request URL as a WSGI app: only signed, fresh, readable requests reach Bolt.

    Bolt's own signature check is off (`create_app`): this one has been made,
    and it is the only HTTP way into the app.
    """

    def __init__(self, app: App, *, signing_secret: str, path: str = "/slack/events") -> None:
        self.app = app
        self.path = path
        self.verifier = SignatureVerifier(signing_secret)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") != "POST" or environ.get("PATH_INFO") != self.path:
            start_response("404 Not Found", list(_PLAIN))
            return [b"Not Found"]
        try:
            body, text = _read_body(environ)
            self._verify(environ, body)
            parsed = parse_body(text, environ.get("CONTENT_TYPE"))
            check_envelope(parsed)
        except Rejected as refused:
            log.warning("refused a request to %s: %s", environ.get("PATH_INFO"), refused.reason)
            start_response(refused.status, list(_PLAIN))  # the server appends to it
            return [refused.reason.encode()]
        request = BoltRequest(
            body=text, query=environ.get("QUERY_STRING"), headers=_headers(environ)
        )
        response = self.app.dispatch(request)
        answer = response.body.encode("utf-8")
        headers = [
            (name, value)
            for name, values in response.headers.items()
            if name.lower() != "content-length"
            for value in values
        ]
        headers.append(("Content-Length", str(len(answer))))
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [answer]

    def _verify(self, environ: dict[str, Any], body: bytes) -> None:
        stamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP")
        signature = environ.get("HTTP_X_SLACK_SIGNATURE")
        if not stamp or not signature:
            raise Rejected("401 Unauthorized", "missing Slack signature headers")
        if not stamp.isascii() or not stamp.isdigit():
            raise Rejected("401 Unauthorized", "X-Slack-Request-Timestamp is not a number")
        if abs(self.verifier.clock.now() - int(stamp)) > 60 * 5:
            raise Rejected("401 Unauthorized", "stale request: timestamp older than 5 minutes")
        if not self.verifier.is_valid(body=body, timestamp=stamp, signature=signature):
            raise Rejected("401 Unauthorized", "invalid Slack signature")


def _headers(environ: dict[str, Any]) -> dict[str, str | Sequence[str]]:
    """The request's headers as Bolt's WSGI adapter names them (slack_bolt/adapter/wsgi)."""
    headers: dict[str, str | Sequence[str]] = {}
    for key, value in environ.items():
        if key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            headers[key.lower().replace("_", "-")] = value
        elif key.startswith("HTTP_"):
            headers[key[5:].lower().replace("_", "-")] = value
    return headers


def _read_body(environ: dict[str, Any]) -> tuple[bytes, str]:
    """The request's body, as bytes and as text."""
    raw = environ.get("CONTENT_LENGTH") or ""
    if not raw.isdigit():
        raise Rejected("411 Length Required", "a Content-Length is required")
    length = int(raw)
    if length > MAX_BODY:
        raise Rejected("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
    body: bytes = environ["wsgi.input"].read(length)
    if len(body) != length:
        raise Rejected("400 Bad Request", "body shorter than its Content-Length")
    try:
        text = body.decode("utf-8")  # Slack's verifier decodes it too, and raises on anything else
    except UnicodeDecodeError:
        raise Rejected("400 Bad Request", "body is not UTF-8") from None
    return body, text


def parse_body(text: str, content_type: str | None) -> dict[str, Any]:
    """Parse a request body as Bolt would, or raise Rejected (400) saying why."""
    if not text:
        return {}
    if (content_type or "").split(";")[0].strip() == "application/json" or text.startswith("{"):
        return _json_object(text, "body")
    try:
        fields = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        raise Rejected("400 Bad Request", "body is not valid form data") from None
    if "payload" in fields:
        return _json_object(fields["payload"], "payload")
    return fields


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise Rejected("400 Bad Request", f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise Rejected("400 Bad Request", f"{what} is not a JSON object")
    return value


def check_envelope(body: dict[str, Any]) -> None:
    """Raise Rejected (400) unless the fields Bolt reads before any listener have their types."""
    problem = envelope_problem(body)
    if problem:
        raise Rejected("400 Bad Request", f"malformed payload: {problem}")


def envelope_problem(body: dict[str, Any]) -> str | None:
    """Say what is wrong with the envelope of a parsed body, or return None."""
    for key in _NAMED:
        if body.get(key) is not None and not isinstance(body[key], str | dict):
            return f"`{key}` must be an object or a string"
    for key in _OBJECTS:
        if body.get(key) is not None and not isinstance(body[key], dict):
            return f"`{key}` must be an object"
    for key in ("authorizations", "response_urls"):
        value = body.get(key)
        if value is not None and not _list_of_objects(value):
            return f"`{key}` must be a list of objects"
    if "type" in body and not isinstance(body["type"], str):
        return "`type` must be a string"
    return _kind_problem(body)


def _kind_problem(body: dict[str, Any]) -> str | None:
    kind = body.get("type")
    if kind == "block_actions":
        actions = body.get("actions")
        if not actions or not _list_of_objects(actions):
            return "`actions` must be a non-empty list of objects"
        if not all(isinstance(a.get("action_id"), str) for a in actions):
            return "every action needs a string `action_id`"
    if kind in ("view_submission", "view_closed"):
        view = body.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("callback_id"), str):
            return "`view` must be an object with a string `callback_id`"
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return "`event` must be an object with a string `type`"
    return None


def _list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


class EnvelopeGuard(Middleware):
    """Bolt global middleware: answer 400 to a malformed envelope (Socket Mode's way in).

    A `Middleware` subclass rather than a function: Bolt builds a function
    middleware's keyword arguments from the payload first (`kwargs_injection`
    reads `actions[0]`), which is exactly what fails on these payloads.
    """

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        problem = envelope_problem(req.body)
        if problem:
            log.warning("refused a malformed Slack payload: %s", problem)
            return BoltResponse(status=400, body=f"malformed payload: {problem}")
        return next()
