"""The front's channel to its work process: Slack requests over a Unix socket.

`serve --http` forwards each Slack request with work from the front to the
work process (bot/front.py). It did so over HTTP (http.client on a kept-alive
connection to the work process's `/slack/events`); that cost the front 0.15 ms
of CPU per forward, as much as Bolt's whole dispatch of the ack, while a
length-prefixed frame over a Unix socket costs 0.025 ms (both measured on
this 2-core machine, 600-byte body, the work process answering at once). At
10 Slack clients the front is busy most of the time and its ack p99 follows
its CPU per request (issue 16), so the forward has a channel of its own.

A request frame is `!II` (head length, body length), the head as JSON (the
request's headers: `Content-Type` and Slack's two signature headers), then
the body. The answer is `!I` and JSON `{"status": int, "text": str}`: the
status and the start of the body the work process's request URL answered.

The channel adds no trust: the socket lies in a directory only this user can
open (the front's `mkdtemp`), and what arrives on it is still a Slack request
that the work process verifies like any other (handlers/verify.py,
`SlackEndpoint`), signed again by the front. A request is sent once and
never again: the work process closes a connection only when it stops or is
gone, and a request resent then could be worked twice.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from io import BytesIO
from typing import Any

log = logging.getLogger(__name__)

CHANNEL_TIMEOUT = 30.0
"""Seconds a forward may take: the work process acks at once, so this only bounds a hang."""
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024  # handlers/verify.py refuses more at the front already

_REQUEST = struct.Struct("!II")
_ANSWER = struct.Struct("!I")
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class ChannelClosed(ConnectionError):
    """The other end closed the channel."""


def _exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly `size` bytes, or raise ChannelClosed."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ChannelClosed("the work process closed the channel")
        got += n
    return bytes(buffer)


class Channel:
    """The front's end: one connection per thread, a request and its answer at a time."""

    def __init__(self, path: str, *, timeout: float = CHANNEL_TIMEOUT) -> None:
        self.path = path
        self._timeout = timeout
        self._local = threading.local()

    def __call__(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Send one request; return the status and text the work process answered."""
        sock: socket.socket | None = getattr(self._local, "open", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
            self._local.open = sock
        try:
            head = json.dumps(headers).encode()
            sock.sendall(_REQUEST.pack(len(head), len(body)) + head + body)
            (length,) = _ANSWER.unpack(_exactly(sock, _ANSWER.size))
            answer = json.loads(_exactly(sock, length))
            return int(answer["status"]), str(answer["text"])
        except BaseException:
            sock.close()  # its state is unknown: the next request opens another
            self._local.open = None
            raise


class ChannelServer:
    """The work process's end: each connection's requests go to a WSGI app in turn."""

    def __init__(self, path: str, app: WSGIApp) -> None:
        self.path = path
        self.app = app
        self._listening: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        """Listen on the socket (it exists when this returns)."""
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(self.path)
        listening.listen(64)
        self._listening = listening
        threading.Thread(target=self._accept, name="channel-accept", daemon=True).start()

    def _accept(self) -> None:
        assert self._listening is not None
        while True:
            try:
                conn, _ = self._listening.accept()
            except OSError:
                return  # stopped
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="channel", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                try:
                    head_size, body_size = _REQUEST.unpack(_exactly(conn, _REQUEST.size))
                except (ChannelClosed, OSError):
                    return
                if head_size > MAX_HEAD or body_size > MAX_BODY:
                    log.error("a forwarded request's frame is too large; closing its channel")
                    return
                headers = json.loads(_exactly(conn, head_size))
                body = _exactly(conn, body_size)
                status, text = self._answer(headers, body)
                answer = json.dumps({"status": status, "text": text}).encode()
                conn.sendall(_ANSWER.pack(len(answer)) + answer)
        except (OSError, ValueError) as exc:
            if not self._stopping:
                log.error("the channel from the front failed: %s; closing it", exc)
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Run the app on the request as a WSGI server would; (status, start of the body)."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/slack/events",
            "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": BytesIO(body),
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = str(value)
        said: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            said[:] = [status]
            return lambda data: None

        try:
            answer = b"".join(self.app(environ, start_response))
        except Exception:
            log.exception("a forwarded request failed in the work process")
            return 500, "the work process failed on this request"
        return int(said[0].split()[0]), answer[:200].decode("utf-8", "replace")

    def stop(self) -> None:
        """Stop listening and close every connection (a request in flight gets no answer)."""
        with self._lock:
            self._stopping = True
            listening, self._listening = self._listening, None
            open_now = list(self._open)
        if listening is not None:
            _shut(listening)
        for conn in open_now:
            _shut(conn)


def _shut(sock: socket.socket) -> None:
    """Wake whatever thread waits on `sock`, then close it."""
    with suppress(OSError):  # not connected, or closed already
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
