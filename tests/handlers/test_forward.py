"""The front's work pool forwards the request being answered, once, signed again."""

from __future__ import annotations

import http.client
import re
import socketserver
import threading
from collections.abc import Iterable, Iterator
from io import BytesIO
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.front import KeptAlive, answering
from bot.sandbox.web import Reply, WebStub
from handlers.forward import Forward
from tests.fakes.waiting import wait_for

SECRET = "front-secret"
BODY = b"command=%2Frollback&text=app+prod&trigger_id=1.2"


@pytest.fixture
def worker() -> Iterator[WebStub]:
    with WebStub() as stub:
        stub.route("POST", "/slack/events", Reply(200, body=b""))
        yield stub


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


def test_a_request_is_forwarded_once_however_often_its_listener_submits(worker: WebStub) -> None:
    forward = Forward(worker.url, SECRET, threads=2, queue=4)

    def listener() -> None:
        assert forward.submit(print) and forward.submit(print)

    assert _answer(forward, listener) == [b"acked"]
    wait_for(lambda: forward.snapshot().done == 1, what="the forward")
    sent = worker.calls("POST", "/slack/events")
    assert len(sent) == 1 and sent[0].body == BODY
    headers = {k.lower(): v for k, v in sent[0].headers.items()}
    assert SignatureVerifier(SECRET).is_valid(
        BODY, headers["x-slack-request-timestamp"], headers["x-slack-signature"]
    )
    assert not SignatureVerifier("another-secret").is_valid(
        BODY, headers["x-slack-request-timestamp"], headers["x-slack-signature"]
    )


def test_work_outside_a_slack_request_is_refused_loudly(worker: WebStub) -> None:
    forward = Forward(worker.url, SECRET, threads=1, queue=1)
    with pytest.raises(RuntimeError, match="outside a Slack request"):
        forward.submit(print)
    assert worker.calls("POST", "/slack/events") == []


def test_a_forward_the_work_process_refuses_is_told_to_the_person(worker: WebStub) -> None:
    worker.route("POST", "/slack/events", Reply(401, body=b"bad signature"))
    forward = Forward(worker.url, SECRET, threads=1, queue=1)
    told: list[str] = []
    _answer(forward, lambda: forward.submit(print, on_error=told.append))
    wait_for(lambda: told, what="the person to be told")
    assert forward.snapshot().failed == 1


def test_a_full_forwarding_queue_refuses_and_forwards_nothing_more(worker: WebStub) -> None:
    worker.route("POST", "/slack/events", Reply(200, body=b"", delay=1.0))
    forward = Forward(worker.url, SECRET, threads=1, queue=1)
    taken = [_submitted(forward) for _ in range(3)]
    assert taken == [True, True, False]
    wait_for(lambda: forward.snapshot().done == 2, timeout=10, what="the two forwards")
    assert len(worker.calls("POST", "/slack/events")) == 2


def _submitted(forward: Forward) -> bool:
    result: list[bool] = []
    _answer(forward, lambda: result.append(forward.submit(print)))
    return result[0]


class _Unreliable(socketserver.BaseRequestHandler):
    """HTTP/1.1 that answers the first request on a connection and keeps it open, then
    closes it unanswered when the next request arrives (a server dropping an idle keep-alive
    connection just as it is reused); `answer_none` closes every connection unanswered."""

    answer_none = False
    connections = 0

    def handle(self) -> None:
        type(self).connections += 1
        stream = self.request.makefile("rb")
        for answered in (False, True):
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = stream.readline()
                if not line:
                    return
                head += line
            length = re.search(rb"(?i)content-length: (\d+)", head)
            stream.read(int(length.group(1)) if length else 0)
            if answered or self.answer_none:
                return  # closed without an answer
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def unreliable() -> Iterator[str]:
    _Unreliable.connections, _Unreliable.answer_none = 0, False
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Unreliable)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_kept_alive_connection_the_work_process_dropped_is_opened_again_once(
    unreliable: str,
) -> None:
    send = KeptAlive(unreliable, timeout=5)
    assert send("POST", "/slack/events", body=b"a=1", headers={}) == (200, b"ok")
    assert send("POST", "/slack/events", body=b"a=2", headers={}) == (200, b"ok")
    assert _Unreliable.connections == 2


def test_a_new_connection_that_fails_is_not_tried_again(unreliable: str) -> None:
    _Unreliable.answer_none = True
    send = KeptAlive(unreliable, timeout=5)
    with pytest.raises(http.client.RemoteDisconnected):
        send("POST", "/slack/events", body=b"a=1", headers={})
    assert _Unreliable.connections == 1
