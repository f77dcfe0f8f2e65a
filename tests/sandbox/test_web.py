"""The scripted HTTP stand-in answers in order and records what it received."""

from __future__ import annotations

import httpx

from sandbox.web import Reply, WebStub


def test_routes_answer_in_order_then_repeat_the_last_reply() -> None:
    with WebStub() as web:
        web.route("GET", "/health", Reply(503), Reply(200, json={"ok": True}))
        codes = [httpx.get(f"{web.url}/health").status_code for _ in range(3)]
    assert codes == [503, 200, 200]


def test_requests_are_recorded_with_their_body() -> None:
    with WebStub() as web:
        web.route("POST", "/hook", Reply(200))
        httpx.post(f"{web.url}/hook", json={"text": "hi"})
        assert web.calls("POST", "/hook")[0].json() == {"text": "hi"}


def test_unknown_route_answers_404() -> None:
    with WebStub() as web:
        assert httpx.get(f"{web.url}/nothing").status_code == 404


def test_reply_can_be_computed_from_the_request() -> None:
    with WebStub() as web:
        web.route("GET", "/echo", lambda req: Reply(200, json={"path": req.path}))
        assert httpx.get(f"{web.url}/echo?x=1").json() == {"path": "/echo?x=1"}
