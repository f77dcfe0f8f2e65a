"""The front's work pool forwards the request being answered, once, signed again, over the
work process's channel (bot/channel.py)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.channel import Channel, ChannelClosed, ChannelServer
from bot.front import answering
from handlers.forward import Forward
from tests.fakes.waiting import wait_for

SECRET = "front-secret"
BODY = b"command=%2Frollback&text=app+prod&trigger_id=1.2"


@dataclass
class Worker:
    """The work process's end of the channel, answering with `status` after `delay` s and
    recording what it was sent."""

    path: str
    status: str = "200 OK"
    delay: float = 0.0
    raises: bool = False
    seen: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        self.seen.append((dict(environ), body))
        if self.raises:
            raise RuntimeError("listener failed")
        threading.Event().wait(self.delay)
        start_response(self.status, [])
        return [b"bad signature" if not self.status.startswith("200") else b""]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    worker = Worker(str(tmp_path / "work.sock"))
    server = ChannelServer(worker.path, worker)
    server.start()
    try:
        yield worker
    finally:
        server.stop()


def _answer(forward: Forward, listener: Any) -> list[bytes]:
    environ = {
        "CONTENT_LENGTH": str(len(BODY)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": BytesIO(BODY),
    }

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        assert environ["wsgi.input"].read() == BODY  # the body is there for the app too
        listener()
        start_response("200 OK", [])
        return [b"acked"]

    return list(answering(environ, app, lambda *a: None))


def test_a_request_is_forwarded_once_however_often_its_listener_submits(worker: Worker) -> None:
    forward = Forward(worker.path, SECRET, threads=2, queue=4)

    def listener() -> None:
        assert forward.submit(print) and forward.submit(print)

    assert _answer(forward, listener) == [b"acked"]
    wait_for(lambda: forward.snapshot().done == 1, what="the forward")
    assert len(worker.seen) == 1
    environ, body = worker.seen[0]
    assert body == BODY
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"]) == ("POST", "/slack/events")
    assert environ["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    stamp, signature = environ["HTTP_X_SLACK_REQUEST_TIMESTAMP"], environ["HTTP_X_SLACK_SIGNATURE"]
    assert SignatureVerifier(SECRET).is_valid(BODY, stamp, signature)
    assert not SignatureVerifier("another-secret").is_valid(BODY, stamp, signature)


def test_work_outside_a_slack_request_is_refused_loudly(worker: Worker) -> None:
    forward = Forward(worker.path, SECRET, threads=1, queue=1)
    with pytest.raises(RuntimeError, match="outside a Slack request"):
        forward.submit(print)
    assert worker.seen == []


@pytest.mark.parametrize("refusal", ["401 Unauthorized", "raises"])
def test_a_forward_the_work_process_refuses_or_fails_is_told_to_the_person(
    worker: Worker, refusal: str
) -> None:
    worker.status, worker.raises = refusal, refusal == "raises"
    forward = Forward(worker.path, SECRET, threads=1, queue=1)
    told: list[str] = []
    _answer(forward, lambda: forward.submit(print, on_error=told.append))
    wait_for(lambda: told, what="the person to be told")
    assert forward.snapshot().failed == 1
    assert len(worker.seen) == 1


def test_a_full_forwarding_queue_refuses_and_forwards_nothing_more(worker: Worker) -> None:
    worker.delay = 1.0
    forward = Forward(worker.path, SECRET, threads=1, queue=1)
    taken = [_submitted(forward) for _ in range(3)]
    assert taken == [True, True, False]
    wait_for(lambda: forward.snapshot().done == 2, timeout=10, what="the two forwards")
    assert len(worker.seen) == 2


def _submitted(forward: Forward) -> bool:
    result: list[bool] = []
    _answer(forward, lambda: result.append(forward.submit(print)))
    return result[0]


def _closing_after_one_request(path: str, received: list[bytes]) -> socket.socket:
    """A work process that reads one request on each connection and closes it unanswered."""
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listening.accept()
            except OSError:
                return
            with conn:
                head, body = struct.unpack("!II", conn.recv(8, socket.MSG_WAITALL))
                received.append(conn.recv(head + body, socket.MSG_WAITALL))

    threading.Thread(target=serve, daemon=True).start()
    return listening


def test_a_request_the_work_process_took_but_did_not_answer_is_not_sent_again(
    tmp_path: Path,
) -> None:
    received: list[bytes] = []
    listening = _closing_after_one_request(str(tmp_path / "work.sock"), received)
    try:
        send = Channel(str(tmp_path / "work.sock"), timeout=5)
        with pytest.raises(ChannelClosed):
            send({"Content-Type": "text/plain"}, b"a=1")
        assert len(received) == 1  # not resent: it may have been worked
        with pytest.raises(ChannelClosed):  # the next request opens a new connection
            send({"Content-Type": "text/plain"}, b"a=2")
        assert len(received) == 2 and received[1].endswith(b"a=2")
    finally:
        listening.close()


def test_a_missing_work_process_fails_the_forward_at_once(tmp_path: Path) -> None:
    send = Channel(str(tmp_path / "nobody.sock"), timeout=5)
    with pytest.raises(FileNotFoundError):
        send({}, b"a=1")


def test_a_frame_larger_than_a_request_can_be_closes_only_its_channel(worker: Worker) -> None:
    oversized = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    oversized.settimeout(5)
    oversized.connect(worker.path)
    with oversized:
        oversized.sendall(struct.pack("!II", 2, 64 * 1024 * 1024) + b"{}")
        with suppress(ConnectionResetError):  # closed unanswered (reset: "{}" was left unread)
            assert oversized.recv(16) == b""
    assert worker.seen == []
    assert Channel(worker.path, timeout=5)({"Content-Type": "text/plain"}, b"a=1") == (200, "")
