"""A scripted HTTP server: each route answers what it is told, in order, and records requests.

Health endpoints, maintenance switches, status pages and webhooks are all
"answer this, then that" in tests, so one server with scripted replies serves
every one of them. A reply can also be a function of the request, for
endpoints whose answer depends on other state (the demo's health check turns
healthy once the old revision is back).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> tuple[bytes, str]:
        """Return the body bytes and their content type."""
        if self.json is not None:
            return json.dumps(self.json).encode(), "application/json"
        return self.body, "text/plain"


@dataclass(frozen=True)
class Request:
    """One recorded request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body or b"null")


Responder = Reply | Callable[[Request], Reply]


class _Route:
    def __init__(self, replies: list[Responder]) -> None:
        self.replies = replies
        self.served = 0

    def next(self) -> Responder:
        index = min(self.served, len(self.replies) - 1)
        self.served += 1
        return self.replies[index]


class WebStub:
    """A local HTTP server whose routes answer scripted replies; the last reply repeats."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, method: str, path: str, *replies: Responder) -> None:
        """Answer `method path` with `replies` in turn, repeating the last one."""
        if not replies:
            raise ValueError("a route needs at least one reply")
        with self._lock:
            self._routes[(method.upper(), path)] = _Route(list(replies))

    def calls(self, method: str, path: str) -> list[Request]:
        """Return the recorded requests to `method path`."""
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def start(self) -> WebStub:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, request: Request) -> Reply:
        path = request.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(request)
            route = self._routes.get((request.method, path))
            responder = route.next() if route else Reply(404, json={"error": "no such route"})
        return responder(request) if callable(responder) else responder

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, dict(self.headers.items()), body)
                reply = stub._answer(request)
                if reply.delay:
                    time.sleep(reply.delay)
                data, content_type = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
