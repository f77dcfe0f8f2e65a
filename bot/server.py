"""The production HTTP server behind `rollback-bot serve --http`: waitress, public API only.

Why waitress: a pure-Python, well-kept WSGI server that runs in our own
process (the runner thread and the HTTP endpoint share one `BotProcess`). One
loop reads every connection and buffers each request whole (headers, then the
body) before one of a bounded number of worker threads sees it, so a client
that sends 10 of its promised 100 bytes costs a file descriptor and a few
bytes, never a thread. It speaks HTTP/1.1 with keep-alive, answers 413 itself
past `max_request_body_size` and 431 past `max_request_header_size`, closes a
connection silent for `channel_timeout` seconds and accepts at most
`connection_limit` connections. All of these are its documented adjustments
(waitress/adjustments.py `Adjustments`), passed to `waitress.create_server`;
the listening socket is ours (the `sockets` adjustment), so its address is
read from it, not from the server.

Two things waitress's public API does not give, and what we chose:
- **A deadline for a whole request.** `channel_timeout` counts silence only, so
  a client trickling a byte every few seconds keeps its connection. Such a
  client holds no thread, and `connection_limit` bounds how many there can be;
  cutting them off sooner is the ingress's job (its request and body timeouts),
  in front of every replica.
- **Graceful stop.** waitress has none (Pylons/waitress#198; PR #499 proposes
  one): `close()` tears the loop's trigger down under requests in flight. So
  the stop is ours, at our edge (`_Edge`, a WSGI middleware): from `stop` on,
  a new request is answered 503 (a WSGI app may not set
  `Connection`, PEP 3333), and `stop` waits
  until every request already in the app has been answered (or `drain_seconds`
  passed) before it closes the server. Kubernetes stops routing to a pod once
  it is terminating (and `/readyz` says "stopping"), so few requests meet the
  503; new connections are refused once `stop` returns.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import waitress

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    """How much the server accepts, and for how long it waits."""

    threads: int = 8
    connection_limit: int = 1000
    max_body_bytes: int = 1_000_000
    max_header_bytes: int = 64 * 1024
    idle_seconds: float = 30.0
    drain_seconds: float = 20.0


class _Edge:
    """The app behind a count of requests in flight; once draining, new ones get 503."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.draining = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self._idle:
            if self.draining:
                refused = True
            else:
                refused = False
                self._in_flight += 1
        if refused:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"stopping"]
        try:
            return _Answer(list(self.app(environ, start_response)), self._done)
        except BaseException:
            self._done()
            raise

    def _done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def drain(self, seconds: float) -> int:
        """Refuse new requests; wait up to `seconds` for those in flight; return how many
        are still unanswered."""
        deadline = time.monotonic() + seconds
        with self._idle:
            self.draining = True
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return self._in_flight


class _Answer:
    """An answer that says it is done when the server closes it (PEP 3333: servers call
    `close()` on the iterable, however the answer went)."""

    def __init__(self, body: list[bytes], done: Callable[[], None]) -> None:
        self.body = body
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def __len__(self) -> int:  # one block: the server can say its Content-Length (PEP 3333)
        return len(self.body)

    def close(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()


POLL_SECONDS = 1
"""How long waitress's loop waits in one poll(). Whole seconds: waitress reads this adjustment
as an int (0.2 became 0, a poll that never waits: one core busy while the server ran). A
finished answer wakes the loop through waitress's trigger, so no request waits on it."""


class HttpServer:
    """One listening socket, served by waitress on a thread of its own until `stop`."""

    def __init__(self, app: WsgiApp, *, host: str, port: int, limits: Limits) -> None:
        self.limits = limits
        self._listener = socket.create_server((host, port), backlog=1024)
        bound = self._listener.getsockname()
        self.address: tuple[str, int] = (str(bound[0]), int(bound[1]))
        """The bound host and port (the port the OS chose for port 0)."""
        self._edge = _Edge(app)
        self._server = waitress.create_server(
            self._edge,
            sockets=[self._listener],
            threads=limits.threads,
            connection_limit=limits.connection_limit,
            max_request_body_size=limits.max_body_bytes,
            max_request_header_size=limits.max_header_bytes,
            channel_timeout=limits.idle_seconds,
            cleanup_interval=max(0.2, limits.idle_seconds / 4),
            asyncore_loop_timeout=POLL_SECONDS,
            asyncore_use_poll=True,
            ident="rollback-bot",
            log_socket_errors=False,
        )
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    def start(self) -> tuple[str, int]:
        """Serve in the background; return the bound address."""
        self._thread.start()
        return self.address

    def stop(self) -> None:
        """Answer the requests already in (new ones get 503), then close the server."""
        left = self._edge.drain(self.limits.drain_seconds)
        if left:
            log.warning("http: %d request(s) still unanswered after the drain; closing", left)
        # Refuse new connections now: closing the descriptor alone leaves the socket listening
        # until the loop's poll() on it returns (up to `POLL_SECONDS`), as Linux
        # keeps a file a poll is waiting on; shutdown() ends the listen at once.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._server.close()
        if self._thread.is_alive():  # its loop ends once the map is empty and poll() returns
            self._thread.join(timeout=POLL_SECONDS + 1)
