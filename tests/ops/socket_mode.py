"""Slack's Socket Mode side, enough for Bolt's SocketModeHandler to connect and to close.

`apps.connections.open` (called with the app-level token) answers the URL of a
local WebSocket server (https://api.slack.com/methods/apps.connections.open:
`{"ok": true, "url": "wss://…"}`). The server does RFC 6455's opening
handshake (Sec-WebSocket-Accept = base64(sha1(key + GUID))), sends Slack's
`hello` message, answers pings with pongs and a close frame with a close
frame, and records what the client did, so a test can see the bot connect and
disconnect on SIGTERM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from typing import Any

from sandbox.slack import FakeSlack
from sandbox.slack.wire import Args

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
APP_TOKEN = "xapp-1-A0SOCKET-1-socketmodetoken"


class SocketModeSlack(FakeSlack):
    """FakeSlack that also opens Socket Mode connections for the app-level token."""

    def __init__(self, wss_url: str) -> None:
        super().__init__()
        self.wss_url = wss_url

    def _auth_error(self, args: dict[str, Any], headers: dict[str, str]) -> str | None:
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if authorization == f"Bearer {APP_TOKEN}":
            return None
        return super()._auth_error(args, headers)

    def _api_apps_connections_open(self, args: Args) -> dict[str, Any]:
        return {"url": self.wss_url}


class WebSocketServer:
    """One-connection-at-a-time WebSocket endpoint that logs opens, messages and closes."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._listener.getsockname()[1]}/link"

    def __enter__(self) -> WebSocketServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            headers = dict(
                line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line
            )
            key = next(v for k, v in headers.items() if k.lower() == "sec-websocket-key")
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            conn.sendall(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            self.events.append("open")
            hello = {"type": "hello", "num_connections": 1, "debug_info": {"host": "local"}}
            conn.sendall(_frame(0x1, json.dumps(hello).encode()))
            self._frames(conn)

    def _frames(self, conn: socket.socket) -> None:
        while True:
            try:
                opcode, payload = _read_frame(conn)
            except (OSError, ConnectionError):
                self.events.append("dropped")
                return
            if opcode == 0x8:
                self.events.append("close")
                conn.sendall(_frame(0x8, payload[:2]))
                return
            if opcode == 0x9:
                conn.sendall(_frame(0xA, payload))
            elif opcode == 0x1:
                self.events.append(payload.decode())


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
    first, second = _recv_exactly(conn, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exactly(conn, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exactly(conn, 8))
    mask = _recv_exactly(conn, 4) if second & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exactly(conn, length)))
    return first & 0x0F, payload


def _frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload
