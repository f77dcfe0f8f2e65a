"""The HTTP server under the served bot: slow clients, big bodies, keep-alive, drain on stop."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest

from bot.server import HttpServer, Limits
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE
from tests.fakes.waiting import wait_for


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    return sock


def _address(sandbox: Sandbox) -> tuple[str, int]:
    url = httpx.URL(sandbox.platform.bot_url)
    assert url.port is not None
    return url.host, url.port


def test_half_sent_requests_hold_no_threads_and_signed_requests_are_still_answered(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    address = _address(sandbox)
    threads_before = threading.active_count()
    held: list[socket.socket] = []
    try:
        for index in range(300):
            sock = _connect(address)
            if index % 2:
                # Promises 100 bytes of body, sends 10.
                sock.sendall(
                    b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: 100\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=abcd"
                )
            else:
                # Stops in the middle of the headers.
                sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nX-Slack-")
            held.append(sock)
        alice = sandbox.person(ALICE)
        for _ in range(5):
            answer = alice.slash("help")
            assert answer.status_code == 200
            assert "/rollback history" in answer.text
        assert threading.active_count() < threads_before + 10
    finally:
        for sock in held:
            sock.close()


def test_aborted_requests_log_no_tracebacks(
    make_sandbox: Callable[..., Sandbox],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox = make_sandbox()
    address = _address(sandbox)
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        sock = _connect(address)
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: 50\r\n\r\nab")
        sock.close()
    assert sandbox.person(ALICE).slash("help").status_code == 200
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_over_the_limit_is_answered_413(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(alert_token="t")
    response = httpx.post(
        sandbox.alerts_url,
        content=b"{" + b" " * 5_000_000 + b"}",
        headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413


def test_keep_alive_serves_several_requests_on_one_connection(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    base = sandbox.platform.bot_url.removesuffix("/slack/events")
    ports: set[int] = set()
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            response = client.get(f"{base}/healthz", extensions={})
            assert response.status_code == 200 and response.http_version == "HTTP/1.1"
            stream = response.extensions["network_stream"]
            ports.add(stream.get_extra_info("client_addr")[1])
    assert len(ports) == 1


def _hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpServer]]:
    started: list[HttpServer] = []

    def start(app: Any = _hello, **limits: Any) -> HttpServer:
        server = HttpServer(app, host="127.0.0.1", port=0, limits=Limits(**limits))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_stop_answers_the_request_in_flight_then_refuses_new_connections(
    serve: Callable[..., HttpServer],
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.set()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"finished"]

    server = serve(slow)
    url = f"http://127.0.0.1:{server.address[1]}/"
    answers: list[httpx.Response] = []
    client = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=30)))
    client.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    # while the request in flight is answered, a new one is told the server is stopping
    late = wait_for(
        lambda: (r := httpx.get(url, timeout=10)).status_code == 503 and r,
        what="the drain to begin",
    )
    assert late.text == "stopping"
    assert stopper.is_alive(), "stop returned before the request in flight was answered"
    release.set()
    client.join(30)
    stopper.join(30)
    assert [a.text for a in answers] == ["finished"]
    assert not stopper.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=2).close()
