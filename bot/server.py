"""The production HTTP server behind `rollback-bot serve --http`: waitress, with deadlines.

Why waitress: it is a pure-Python, well-kept WSGI server that runs in our own
process (the runner thread and the HTTP endpoint share one `BotProcess`), and
its design is what a bot under attack needs. One asyncore loop reads every
connection and buffers each request whole (headers, then the body, spilling to
a temporary file past `inbuf_overflow`) before one of a bounded number of
worker threads sees it, so a client that sends 10 of its promised 100 bytes
costs a file descriptor and a few bytes of memory, never a thread. It speaks
HTTP/1.1 with keep-alive, answers 413 itself when `Content-Length` (or a
chunked body) passes `max_request_body_size`, and 431 on oversized headers.

What waitress lacks, we add here, small:
- **A deadline for a whole request.** waitress closes a connection only after
  `channel_timeout` seconds of silence; a slowloris client that trickles a
  byte every few seconds is never silent. `_DeadlineChannel` notes when a
  request's first byte arrived and `_DeadlineServer.maintenance` (waitress
  calls it every `cleanup_interval`) closes any connection whose request is
  still incomplete after `request_deadline` seconds.
- **Graceful shutdown.** `HttpServer.stop` closes the listening socket (new
  connections are refused at once), keeps the loop turning until every
  request already handed to a worker has been answered and flushed (or
  `drain_seconds` passed), then closes the remaining idle and half-sent
  connections and stops the worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

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
    request_deadline: float = 20.0
    drain_seconds: float = 20.0


class _DeadlineChannel(HTTPChannel):  # type: ignore[misc]
    """An HTTP connection that remembers when its current request began to arrive."""

    request_began: float = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_began = time.monotonic()
        return bool(super().received(data))


class _DeadlineServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server, closing connections whose request arrives too slowly."""

    channel_class = _DeadlineChannel
    request_deadline = 20.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_deadline
        for channel in list(self.active_channels.values()):
            partial = channel.request is not None and not channel.requests
            if partial and channel.request_began < cutoff and not channel.will_close:
                log.info("http: closing a connection whose request is still incomplete")
                channel.will_close = True


class HttpServer:
    """One listening socket, served by waitress on a thread of its own until `stop`."""

    def __init__(self, app: WsgiApp, *, host: str, port: int, limits: Limits) -> None:
        self.limits = limits
        adj = Adjustments(
            host=host,
            port=port,
            threads=limits.threads,
            connection_limit=limits.connection_limit,
            max_request_body_size=limits.max_body_bytes,
            max_request_header_size=limits.max_header_bytes,
            channel_timeout=limits.idle_seconds,
            cleanup_interval=max(0.2, min(limits.idle_seconds, limits.request_deadline) / 4),
            asyncore_loop_timeout=0.2,
            ident="rollback-bot",
            log_socket_errors=False,
        )
        self._map: dict[int, Any] = {}
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(limits.threads)
        self._server = _DeadlineServer(
            app, self._map, dispatcher=self._dispatcher, adj=adj, sockinfo=adj.listen[0]
        )
        self._server.request_deadline = limits.request_deadline
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the port the OS chose for port 0)."""
        return str(self._server.effective_host), int(self._server.effective_port)

    def start(self) -> tuple[str, int]:
        """Serve in the background; return the bound address."""
        self._thread.start()
        return self.address

    def stop(self) -> None:
        """Refuse new connections, answer the requests already in, then close everything."""
        # No pull_trigger: the loop wakes every 0.2 s anyway, and writing to the trigger's
        # pipe after the loop closed it could write into whatever file reused its number.
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.limits.drain_seconds + 10)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                wasyncore.loop(timeout=0.2, map=self._map, use_poll=True, count=1)
            except Exception:  # the server must outlive any one connection's failure
                log.exception("http: the server loop failed; serving on")
        self._drain_and_close()

    def _drain_and_close(self) -> None:
        wasyncore.dispatcher.close(self._server)  # the listening socket only
        deadline = time.monotonic() + self.limits.drain_seconds
        while self._in_flight() and time.monotonic() < deadline:
            try:
                wasyncore.loop(timeout=0.1, map=self._map, use_poll=True, count=1)
            except Exception:
                log.exception("http: the server loop failed while draining")
        left = self._in_flight()
        if left:
            log.warning("http: %d request(s) still unanswered after the drain; closing", left)
        self._server.trigger.close()
        wasyncore.close_all(self._map)
        self._dispatcher.shutdown(cancel_pending=True, timeout=5)

    def _in_flight(self) -> int:
        return sum(
            1
            for channel in list(self._map.values())
            if isinstance(channel, HTTPChannel)
            and (channel.requests or channel.total_outbufs_len)
            and channel.connected
        )
