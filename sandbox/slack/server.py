"""`FakeSlack`: the Web API over HTTP on a free local port, with auth, failures and a call log."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sandbox.slack.methods import SlackMethods
from sandbox.slack.models import DEFAULT_TOKEN, Call, Workspace
from sandbox.slack.wire import ApiError, Args, parse_args


@dataclass(frozen=True)
class _Failure:
    error: str
    status: int
    retry_after: int


@dataclass(frozen=True)
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Hook = Callable[[Call], None]


class _Drop(Exception):
    """Close the connection without an answer, as a dropped connection does."""


class FakeSlack(SlackMethods):
    """Slack's Web API on a free local port: `WebClient(token=fake.token, base_url=fake.url)`."""

    def __init__(self, *, token: str = DEFAULT_TOKEN, workspace: Workspace | None = None) -> None:
        super().__init__(workspace)
        self.token = token
        self._calls: list[Call] = []
        self._failures: dict[str, deque[_Failure]] = {}
        self._disruptions: dict[str, deque[float | None]] = {}
        self._hooks: list[Hook] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.upload_prefix = f"{self.base}/upload/v1/"

    @property
    def base(self) -> str:
        """Return the server's root, e.g. http://127.0.0.1:54321."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """Return the Web API base URL for `WebClient(base_url=...)`, trailing slash included."""
        return f"{self.base}/api/"

    def start(self) -> FakeSlack:
        """Serve in a background thread."""
        # A short poll interval makes stop() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(
        self,
        method: str,
        *,
        error: str = "ratelimited",
        status: int = 429,
        retry_after: int = 1,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls to `method` with `error` (a 429 carries Retry-After)."""
        failure = _Failure(error, status, retry_after)
        with self._lock:
            self._failures.setdefault(method, deque()).extend([failure] * times)

    def drop_next(self, method: str, *, times: int = 1) -> None:
        """Close the connection of the next `times` calls to `method` unanswered (not applied)."""
        with self._lock:
            self._disruptions.setdefault(method, deque()).extend([None] * times)

    def stall_next(self, method: str, *, seconds: float, times: int = 1) -> None:
        """Answer the next `times` calls to `method` normally, but only after `seconds`."""
        with self._lock:
            self._disruptions.setdefault(method, deque()).extend([seconds] * times)

    def on_call(self, callback: Hook) -> None:
        """Call `callback(call)` for every call, after it is answered and before it is sent."""
        with self._lock:
            self._hooks.append(callback)

    @property
    def calls(self) -> list[Call]:
        """Return every call received, in order."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        """Return the calls to one Web API method, in order."""
        return [c for c in self.calls if c.method == method]

    def _answer(self, method: str, *, query: str, body: bytes, headers: dict[str, str]) -> _Reply:
        """Answer one Web API request, record it and tell the hooks."""
        with self._lock:
            queued = self._disruptions.get(method)
            disruption = queued.popleft() if queued else False
        if disruption is None:
            raise _Drop(method)
        if disruption:
            time.sleep(disruption)
        content_type = _header(headers, "Content-Type") or ""
        try:
            args = parse_args(query=query, body=body, content_type=content_type)
        except ApiError as err:
            args, reply = {}, _error_reply(err)
        else:
            reply = self._reply(method, args, headers)
        args.pop("token", None)
        call = Call(method, args, headers, reply.status, reply.payload)
        with self._lock:
            self._calls.append(call)
            hooks = list(self._hooks)
        for hook in hooks:
            hook(call)
        return reply

    def _reply(self, method: str, args: dict[str, Any], headers: dict[str, str]) -> _Reply:
        implementation = getattr(self, "_api_" + method.replace(".", "_"), None)
        if implementation is None:
            return _Reply(200, {"ok": False, "error": "unknown_method"})
        auth_error = self._auth_error(args, headers)
        if auth_error:
            return _Reply(200, {"ok": False, "error": auth_error})
        with self._lock:
            queued = self._failures.get(method)
            if queued:
                return _failure_reply(queued.popleft())
            try:
                answer = implementation(Args(args))
            except ApiError as err:
                return _error_reply(err)
            except Exception as err:  # a bug in the fake reaches the client as Slack's 500
                detail = f"{type(err).__name__}: {err}"
                return _Reply(500, {"ok": False, "error": "fatal_error", "detail": detail})
        scopes = ",".join(self.workspace.scopes)
        return _Reply(200, {"ok": True, **answer}, {"X-OAuth-Scopes": scopes})

    def _auth_error(self, args: dict[str, Any], headers: dict[str, str]) -> str | None:
        """Return not_authed / invalid_auth unless the bot token came in header or body."""
        authorization = _header(headers, "Authorization") or ""
        token = authorization.removeprefix("Bearer ").strip() or str(args.get("token") or "")
        if not token:
            return "not_authed"
        return None if token == self.token else "invalid_auth"


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def _error_reply(err: ApiError) -> _Reply:
    return _Reply(200, {"ok": False, "error": err.error, **err.extra})


def _failure_reply(failure: _Failure) -> _Reply:
    headers = {"Retry-After": str(failure.retry_after)} if failure.status == 429 else {}
    return _Reply(failure.status, {"ok": False, "error": failure.error}, headers)


class _Handler(BaseHTTPRequestHandler):
    """/api/<method> for the Web API, /upload/v1/<id> for files, answered by `fake`."""

    fake: FakeSlack

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path.startswith("/api/"):
            self._api(parts.path.removeprefix("/api/"), parts.query, body)
        elif parts.path.startswith("/upload/v1/"):
            self._upload(parts.path.removeprefix("/upload/v1/"), body)
        else:
            self._send(404, b"not found", "text/plain")

    do_GET = do_POST

    def _api(self, method: str, query: str, body: bytes) -> None:
        headers = dict(self.headers.items())
        try:
            reply = self.fake._answer(method, query=query, body=body, headers=headers)
        except _Drop:
            self.close_connection = True
            return
        data = json.dumps(reply.payload).encode()
        self._send(reply.status, data, "application/json; charset=utf-8", reply.headers)

    def _upload(self, file_id: str, body: bytes) -> None:
        if self.fake._receive_upload(file_id, body):
            self._send(200, f"OK - {len(body)}".encode(), "text/plain")
        else:
            self._send(404, b"upload url not found", "text/plain")

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class answering for `fake`."""
    return type("Handler", (_Handler,), {"fake": fake})
