"""Acks in one process, the work in another: `rollback-bot serve --http` runs two.

Why (issue 16): a listener acks and hands its work to the bot's pool
(handlers/lazy.py), so an ack never waits for a thread. But in one CPython
process the work still takes the GIL from the threads that answer Slack: an
ack arriving while a form is being built waits for the interpreter switch
(5 ms at a time) several times over. Measured side by side with a bare Bolt
app (bench/bench_ack.py, each app in processes of its own), the bot's
`/rollback` ack p99 was 1.7x the bare app's at 1 client and 2.7x at 10 with
everything in one process, 0.8x and 2.1x with two (README, Benchmarks).

So `serve --http` starts a **work process** (`serve --one-process` on a
loopback port of its own, the whole bot: runner, outbox sender, monitoring,
the listeners' work) and then serves Slack from this **front process**:

- `/slack/events`: the same Bolt app and listeners answer Slack here. What a
  listener would hand to its work pool (`Later.submit`) is instead the
  request itself: `Forward` (handlers/forward.py) sends the request's body,
  signed again with the signing secret and a fresh timestamp, over the
  work process's channel (bot/channel.py, a Unix socket: cheaper for the
  front than HTTP), where the work process answers it as it would a POST
  to its `/slack/events`: the same listener runs again, acks into the void
  and does the work. A listener's ack must therefore stay free of side
  effects beyond this process's memory (handlers/lazy.py says so): it runs
  in both processes. A request is forwarded at most once, however many
  times its listener submits.
- `/alerts`, `/readyz`: passed to the work process, which owns monitoring and
  the runner. The front is not ready while the work process is not.
- `/metrics`: the work process's metrics, followed by the front's own: the
  ack Slack sees (`rollback_slack_request_seconds`; the work process's own
  handling of forwarded requests is `rollback_worker_request_seconds`) and
  the forwarding queue (`rollback_forward_*`).
- `/healthz`: this process answers.

The forwarding pool is a `Later` with the work process's limits: when it is
full the person is told the bot is busy, as before. A forward that fails
(the work process is gone or answers an error) is told to the person with a
reference, like any work that fails. If the work process exits, the front
stops too and `serve` exits non-zero, so the container restarts both; a
SIGTERM stops the front first (no new requests), then the work process
(which hands its run back as before).

Socket Mode (`serve --socket`) keeps one process: its requests arrive over
Slack's connection, unsigned, and are acked over it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PASS_ON_TIMEOUT = 30.0
"""Seconds a request passed on to the work process may take, unless the caller says."""


@dataclass
class FrontRequest:
    """The Slack request being answered: its raw body, and whether it was forwarded yet."""

    body: bytes
    content_type: str
    forwarded: bool = False


_CURRENT: ContextVar[FrontRequest | None] = ContextVar("rollback_front_request", default=None)


def current_request() -> FrontRequest | None:
    """The Slack request this thread is answering in the front process (`answering`)."""
    return _CURRENT.get()


def signed_headers(secret: str, body: bytes, content_type: str) -> dict[str, str]:
    """Headers that sign `body` now, as Slack signs a request (v0, HMAC-SHA256)."""
    stamp = str(int(time.time()))
    base = b"v0:" + stamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
    }


def exchange(
    base_url: str,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = PASS_ON_TIMEOUT,
) -> tuple[int, str, bytes]:
    """One HTTP request to the work process: (status, content type, body)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def _body(environ: dict[str, Any]) -> bytes:
    """The request's body, as long as its Content-Length says (none without one)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
    return body


def answering(environ: dict[str, Any], app: Any, start_response: Any) -> Iterable[bytes]:
    """Serve `app` with the request's body remembered for `Forward` (read once, put back)."""
    body = _body(environ)
    environ["wsgi.input"] = BytesIO(body)
    content_type = environ.get("CONTENT_TYPE") or "application/x-www-form-urlencoded"
    token = _CURRENT.set(FrontRequest(body=body, content_type=content_type))
    try:
        return list(app(environ, start_response))
    finally:
        _CURRENT.reset(token)


def passed_on(
    worker_url: str, environ: dict[str, Any], start_response: Any, *, timeout: float
) -> Iterable[bytes]:
    """Pass a request (/alerts, /readyz) to the work process and its answer back; 503 when it
    does not answer."""
    body = _body(environ)
    headers = {
        name: environ[key]
        for name, key in (
            ("Content-Type", "CONTENT_TYPE"),
            ("Authorization", "HTTP_AUTHORIZATION"),
        )
        if environ.get(key)
    }
    path = environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    try:
        status, content_type, answer = exchange(
            worker_url, environ["REQUEST_METHOD"], path, body=body, headers=headers, timeout=timeout
        )
    except OSError as exc:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"the work process does not answer: {type(exc).__name__}".encode()]
    reason = http.client.responses.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", content_type or "text/plain")])
    return [answer]


class WorkProcess:
    """The work process: `rollback-bot serve --one-process` on a loopback port, taking
    forwarded requests on `channel` (bot/channel.py), a socket in a directory of its own."""

    SERVING = re.compile(r"serving (http://\S+) ")

    def __init__(self, argv: list[str], *, start_seconds: float = 120.0) -> None:
        self.argv = argv
        self.start_seconds = start_seconds
        self._process: subprocess.Popen[str] | None = None
        self._stopping = threading.Event()
        self._directory = tempfile.mkdtemp(prefix="rollback-bot-")  # mode 0700: ours only
        self.channel = os.path.join(self._directory, "work.sock")

    def start(self) -> str:
        """Start it and wait until it serves; return its base URL."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bot", *self.argv, "--channel", self.channel],
            # its stdin is our pipe: when this process dies, the work process sees EOF and
            # stops. Its own session: Ctrl-C reaches the front only, which stops it in order.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=self._read, args=(found,), daemon=True)
        reader.start()
        deadline = time.monotonic() + self.start_seconds
        while not found and time.monotonic() < deadline and self._process.poll() is None:
            time.sleep(0.05)
        if not found:
            self.stop()
            code = self._process.returncode
            raise RuntimeError(f"the work process did not start (exit status {code})")
        return found[0]

    def _read(self, found: list[str]) -> None:
        """Pass the work process's output on; note where it serves."""
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            match = self.SERVING.search(line)
            if match and not found:
                found.append(match.group(1))
                continue
            print(f"work process: {line}", end="", flush=True)

    def watch(self, on_exit: Callable[[int], None]) -> None:
        """Call `on_exit(status)` if the work process exits before `stop`."""

        def wait() -> None:
            assert self._process is not None
            status = self._process.wait()
            if not self._stopping.is_set():
                on_exit(status)

        threading.Thread(target=wait, name="work-process-watch", daemon=True).start()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to `timeout` s for its clean stop, then kill it."""
        self._stopping.set()
        process = self._process
        try:
            if process is None:
                return None
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.error("the work process did not stop within %.0fs; killing it", timeout)
                    process.kill()
                    process.wait()
            return process.returncode
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)
