"""HTTP steps against scripted local servers that fail, are slow, or recover after N tries."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from actions.base import Action, PermanentError, StepContext
from actions.http import (
    Backoff,
    CustomerEmail,
    Health,
    HealthCheck,
    HttpOptions,
    HttpStatusError,
    Maintenance,
    Metrics,
    MetricsReading,
    NotifyWebhook,
    SendCustomerEmail,
    SetMaintenance,
    StatusPage,
    UpdateStatusPage,
    Webhook,
    check_health,
    poll_health,
    read_metrics,
)
from actions.params import SecretRef
from sandbox.web import Reply, Request, Responder, WebStub

TOKEN = "tok-3f9a-very-secret"
FAST = HttpOptions(request_timeout=1.0, backoff=Backoff(first=0.01, cap=0.05))


class ScopedStub:
    """One test's view of a shared WebStub: its routes live under its own path prefix.

    WebStub takes half a second to shut down, so one server serves the whole
    module and each test gets a fresh prefix instead of a fresh server.
    """

    def __init__(self, stub: WebStub, prefix: str) -> None:
        self._stub = stub
        self._prefix = prefix
        self.url = stub.url + prefix

    def route(self, method: str, path: str, *replies: Responder) -> None:
        """Answer `method path` (under this test's prefix) with `replies` in turn."""
        self._stub.route(method, self._prefix + path, *replies)

    def calls(self, method: str, path: str) -> list[Request]:
        """Return the recorded requests to `method path` under this test's prefix."""
        return self._stub.calls(method, self._prefix + path)

    @property
    def requests(self) -> list[Request]:
        """Return every request this test's prefix received."""
        return [r for r in self._stub.requests if r.path.startswith(self._prefix + "/")]


@pytest.fixture(scope="module")
def shared_stub() -> Iterator[WebStub]:
    """Serve one scripted stub on a free port for the module."""
    with WebStub() as stub:
        yield stub


@pytest.fixture
def web(shared_stub: WebStub, request: pytest.FixtureRequest) -> ScopedStub:
    """Give a test its own routes on the shared stub."""
    return ScopedStub(shared_stub, f"/{request.node.name.replace('[', '-').rstrip(']')}")


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> SecretRef:
    """Put the admin token in an environment variable and refer to it."""
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    return SecretRef(env="ADMIN_TOKEN")


def context(lines: list[str], *, timeout: float = 10.0) -> StepContext:
    """Build a step context whose emitted lines land in `lines`."""
    return StepContext.for_test(timeout=timeout, emit=lines.append)


def closed_port_url() -> str:
    """Return a URL on 127.0.0.1 where nothing listens any more."""
    with WebStub() as stub:
        return stub.url


def test_health_check_reports_recovery_after_failed_attempts(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(503), Reply(503), Reply(502), Reply(200))
    lines: list[str] = []
    result = HealthCheck(f"{web.url}/health", options=FAST).run(context(lines))
    assert result.data["attempts"] == 4
    assert "4 attempts" in result.summary
    assert result.summary.startswith("healthy after ")
    assert len(web.calls("GET", "/health")) == 4
    assert any("503" in line for line in lines)


def test_health_check_counts_a_single_attempt_in_the_singular(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(200))
    result = HealthCheck(f"{web.url}/health", options=FAST).run(context([]))
    assert result.summary.endswith(", 1 attempt")


def test_health_check_gives_up_at_deadline_with_last_status(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(500), Reply(503, body=b"database unreachable"))
    check = HealthCheck(f"{web.url}/health", timeout=0.5, options=FAST)
    with pytest.raises(PermanentError) as caught:
        check.run(context([]))
    assert "not healthy after" in str(caught.value)
    assert "503 Service Unavailable: database unreachable" in str(caught.value)
    assert len(web.calls("GET", "/health")) > 2


def test_health_check_stops_at_the_contexts_deadline_before_its_own(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(503))
    with pytest.raises(PermanentError, match="503"):
        HealthCheck(f"{web.url}/health", timeout=300.0, options=FAST).run(context([], timeout=0.4))


def test_health_check_retries_a_request_that_times_out(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(200, delay=1.0), Reply(200))
    options = HttpOptions(request_timeout=0.2, backoff=Backoff(first=0.01, cap=0.05))
    lines: list[str] = []
    result = HealthCheck(f"{web.url}/health", options=options).run(context(lines))
    assert result.data["attempts"] == 2
    assert any("no answer within 0.2 s" in line for line in lines)


def test_health_check_reports_connection_refused_at_deadline() -> None:
    check = HealthCheck(f"{closed_port_url()}/health", timeout=0.4, options=FAST)
    with pytest.raises(PermanentError, match="ConnectError"):
        check.run(context([]))


def test_health_check_stops_when_retry_after_points_past_the_deadline(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(503, headers={"Retry-After": "120"}))
    with pytest.raises(PermanentError, match="1 attempt; last answer: 503"):
        HealthCheck(f"{web.url}/health", timeout=5.0, options=FAST).run(context([]))
    assert len(web.calls("GET", "/health")) == 1


def test_health_check_accepts_only_the_expected_status(web: ScopedStub) -> None:
    web.route("GET", "/ready", Reply(200), Reply(204))
    result = HealthCheck(f"{web.url}/ready", expect_status=204, options=FAST).run(context([]))
    assert result.data["attempts"] == 2


def test_health_check_emits_a_line_per_change_of_failure_not_per_attempt(web: ScopedStub) -> None:
    replies = [Reply(503)] * 8 + [Reply(502)] * 8 + [Reply(200)]
    web.route("GET", "/health", *replies)
    options = HttpOptions(request_timeout=1.0, backoff=Backoff(first=0.001, cap=0.002))
    lines: list[str] = []
    HealthCheck(f"{web.url}/health", options=options).run(context(lines))
    assert len(lines) == 2
    assert "503" in lines[0]
    assert "502" in lines[1] and "(7 similar not shown)" in lines[1]


def test_health_check_describes_url_status_and_deadline() -> None:
    check = HealthCheck("http://lb.internal/health", timeout=120, name="lb_health")
    assert (
        check.describe() == "poll GET http://lb.internal/health until it answers 200 (up to 120 s)"
    )
    assert check.name == "http.lb_health"


def test_health_check_fails_at_once_on_a_url_it_can_never_fetch() -> None:
    check = HealthCheck("ftp://app.internal/health", timeout=30.0, options=FAST)
    with pytest.raises(PermanentError, match="1 attempt; last answer: bad URL"):
        check.run(context([]))


def test_poll_health_passes_on_any_2xx_when_no_status_is_expected(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(503), Reply(204))
    health = poll_health(f"{web.url}/health", deadline=time.monotonic() + 5.0, options=FAST)
    assert (health.ok, health.status, health.attempts) == (True, 204, 2)
    assert health.detail == f"{web.url}/health answered 204"


def test_poll_health_returns_the_last_answer_at_the_deadline_instead_of_raising(
    web: ScopedStub,
) -> None:
    web.route("GET", "/health", Reply(500), Reply(502, body=b"upstream down"))
    # Deadlines leave room for a loaded machine: a request there took 0.25 s on its own.
    health = poll_health(f"{web.url}/health", deadline=time.monotonic() + 2.0, options=FAST)
    assert not health.ok
    assert health.status == 502
    assert health.answer == "502 Bad Gateway: upstream down"
    assert health.attempts == len(web.calls("GET", "/health")) > 2


def test_poll_health_tells_each_retried_attempt_and_stops_when_told_to(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(503))
    seen: list[int] = []

    def give_up_after_two(health: Health) -> None:
        seen.append(health.attempts)
        if health.attempts == 2:
            raise PermanentError("the container exited")

    with pytest.raises(PermanentError, match="the container exited"):
        poll_health(
            f"{web.url}/health",
            deadline=time.monotonic() + 5.0,
            options=FAST,
            on_retry=give_up_after_two,
        )
    assert seen == [1, 2]
    assert len(web.calls("GET", "/health")) == 2


def test_poll_health_tries_once_even_when_the_deadline_has_passed(web: ScopedStub) -> None:
    web.route("GET", "/health", Reply(200))
    health = poll_health(f"{web.url}/health", deadline=time.monotonic() - 1.0, options=FAST)
    assert (health.ok, health.attempts) == (True, 1)


def test_check_health_probes_once_and_names_the_error() -> None:
    url = f"{closed_port_url()}/health"
    health = check_health(url, timeout=0.5)
    assert (health.ok, health.status, health.attempts) == (False, None, 1)
    assert health.detail.startswith(f"{url}: ConnectError")


def test_maintenance_on_posts_the_procedures_message_with_bearer_token(
    web: ScopedStub, token: SecretRef
) -> None:
    web.route("POST", "/api/admin/maintenance", Reply(200, json={"ok": True}))
    params = Maintenance(url=f"{web.url}/api/admin/maintenance", token=token)
    result = SetMaintenance(params, enabled=True, options=FAST).run(context([]))
    (call,) = web.calls("POST", "/api/admin/maintenance")
    assert call.json() == {
        "enabled": True,
        "message": "Emergency maintenance - system rollback in progress",
    }
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.data["sent"] == call.json()
    assert "maintenance mode on" in result.summary


def test_maintenance_off_posts_enabled_false_and_is_safe_to_repeat(
    web: ScopedStub, token: SecretRef
) -> None:
    web.route("POST", "/api/admin/maintenance", Reply(200))
    action = SetMaintenance(
        Maintenance(url=f"{web.url}/api/admin/maintenance", token=token), enabled=False
    )
    action.run(context([]))
    action.run(context([]))
    calls = web.calls("POST", "/api/admin/maintenance")
    assert [c.json() for c in calls] == [{"enabled": False}, {"enabled": False}]
    assert all("Idempotency-Key" not in c.headers for c in calls)
    assert action.idempotent and action.name == "http.maintenance_off"


def test_maintenance_describe_names_url_body_and_token_source_not_token(token: SecretRef) -> None:
    params = Maintenance(url="http://app:3000/api/admin/maintenance", token=token)
    text = SetMaintenance(params, enabled=True).describe()
    assert text.startswith('POST http://app:3000/api/admin/maintenance {"enabled": true, "message"')
    assert "bearer token from $ADMIN_TOKEN" in text
    assert TOKEN not in text


def test_server_errors_are_retried_until_success(web: ScopedStub) -> None:
    web.route("POST", "/status", Reply(500), Reply(502), Reply(200))
    lines: list[str] = []
    params = StatusPage(url=f"{web.url}/status")
    result = UpdateStatusPage(params, status="degraded", message="x", options=FAST).run(
        context(lines)
    )
    assert len(web.calls("POST", "/status")) == 3
    assert result.data["status"] == 200
    assert any("500 Internal Server Error" in line for line in lines)


def test_slow_server_hits_request_timeout_and_is_retried(web: ScopedStub) -> None:
    web.route("POST", "/status", Reply(200, delay=1.0), Reply(200))
    options = HttpOptions(request_timeout=0.2, backoff=Backoff(first=0.01, cap=0.05))
    lines: list[str] = []
    UpdateStatusPage(
        StatusPage(url=f"{web.url}/status"), status="operational", message="ok", options=options
    ).run(context(lines))
    assert len(web.calls("POST", "/status")) == 2
    assert "no answer within 0.2 s" in lines[0]


def test_client_error_fails_at_once_with_status_and_body_excerpt(
    web: ScopedStub, token: SecretRef
) -> None:
    web.route("POST", "/mail", Reply(422, json={"error": "invalid recipient"}))
    params = CustomerEmail(url=f"{web.url}/mail", to="customers@voxflow.com", token=token)
    with pytest.raises(HttpStatusError) as caught:
        SendCustomerEmail(params, subject="s", body="b", options=FAST).run(context([]))
    assert caught.value.status == 422
    assert "422 Unprocessable" in str(caught.value) and "invalid recipient" in str(caught.value)
    assert len(web.calls("POST", "/mail")) == 1


def test_too_many_requests_waits_as_long_as_retry_after_says(web: ScopedStub) -> None:
    web.route("POST", "/hook", Reply(429, headers={"Retry-After": "1"}), Reply(200))
    lines: list[str] = []
    NotifyWebhook(Webhook(url=f"{web.url}/hook"), text="t", fields={}, options=FAST).run(
        context(lines)
    )
    assert len(web.calls("POST", "/hook")) == 2
    assert "retry 1 in 1.0 s" in lines[0]


def test_retry_after_past_the_deadline_gives_up_at_once(web: ScopedStub) -> None:
    web.route("POST", "/status", Reply(503, headers={"Retry-After": "120"}))
    action = UpdateStatusPage(
        StatusPage(url=f"{web.url}/status"), status="maintenance", message="m", options=FAST
    )
    with pytest.raises(
        PermanentError,
        match=r"no retry fits before the step's deadline \(the server asked to wait 120 s\)",
    ):
        action.run(context([], timeout=2.0))
    assert len(web.calls("POST", "/status")) == 1


def test_persistent_server_errors_fail_at_the_deadline_with_the_last_status(
    web: ScopedStub,
) -> None:
    web.route("POST", "/status", Reply(502, body=b"bad gateway"))
    action = UpdateStatusPage(
        StatusPage(url=f"{web.url}/status"), status="degraded", message="m", options=FAST
    )
    with pytest.raises(PermanentError, match="last: 502 Bad Gateway: bad gateway"):
        action.run(context([], timeout=2.0))


def test_a_redirected_write_is_refused_naming_the_location(web: ScopedStub) -> None:
    web.route("POST", "/old", Reply(301, headers={"Location": "/new"}))
    action = UpdateStatusPage(
        StatusPage(url=f"{web.url}/old"), status="degraded", message="m", options=FAST
    )
    with pytest.raises(HttpStatusError, match="redirect to /new"):
        action.run(context([]))


def test_missing_token_is_a_permanent_error_naming_the_variable(
    web: ScopedStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    params = Maintenance(url=f"{web.url}/m", token=SecretRef(env="NO_SUCH_TOKEN"))
    with pytest.raises(PermanentError, match=r"\$NO_SUCH_TOKEN"):
        SetMaintenance(params, enabled=False).run(context([]))
    assert web.requests == []


def test_token_never_appears_in_messages_errors_or_logs(
    web: ScopedStub, token: SecretRef, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def echo_header(request: Request) -> Reply:
        return Reply(401, body=f"bad credentials {request.headers['Authorization']}".encode())

    web.route("POST", "/maintenance", Reply(500), Reply(200))
    web.route("POST", "/status", Reply(503), echo_header)
    lines: list[str] = []
    maintenance = SetMaintenance(
        Maintenance(url=f"{web.url}/maintenance", token=token), enabled=True, options=FAST
    )
    result = maintenance.run(context(lines))
    status = UpdateStatusPage(
        StatusPage(url=f"{web.url}/status", token=token),
        status="degraded",
        message="m",
        options=FAST,
    )
    with pytest.raises(HttpStatusError) as caught:
        status.run(context(lines))
    web.route("POST", "/email", lambda request: Reply(503, body=echo_header(request).body))
    email = SendCustomerEmail(
        CustomerEmail(url=f"{web.url}/email", to="a@b", token=token), subject="s", body="b"
    )
    with pytest.raises(PermanentError) as exhausted:
        email.run(context(lines, timeout=2.0))
    assert "bad credentials Bearer ***" in str(exhausted.value)
    assert web.calls("POST", "/maintenance")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert "bad credentials Bearer ***" in str(caught.value)
    texts = [maintenance.describe(), status.describe(), result.summary, result.output]
    texts += [str(result.data), str(caught.value), str(exhausted.value), *lines, caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    assert len(lines) >= 3 and caplog.records
    assert all(TOKEN not in text for text in texts)


def test_status_page_posts_status_and_message_with_bearer_token(
    web: ScopedStub, token: SecretRef
) -> None:
    web.route("POST", "/api/status", Reply(201))
    params = StatusPage(url=f"{web.url}/api/status", token=token)
    message = "System has been rolled back and is now operational."
    result = UpdateStatusPage(params, status="operational", message=message).run(context([]))
    (call,) = web.calls("POST", "/api/status")
    assert call.json() == {"status": "operational", "message": message}
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.summary == f"status page set to operational at {web.url}/api/status (201)"


def test_webhook_posts_slack_attachment_of_fields_without_auth(web: ScopedStub) -> None:
    web.route("POST", "/services/T1/B2/key", Reply(200, body=b"ok"))
    fields = {"Incident ID": "INC-20240101-120000", "Status": "System Operational"}
    action = NotifyWebhook(
        Webhook(url=f"{web.url}/services/T1/B2/key"),
        text="📋 Post-Rollback Status Update",
        fields=fields,
    )
    action.run(context([]))
    (call,) = web.calls("POST", "/services/T1/B2/key")
    assert call.json() == {
        "text": "📋 Post-Rollback Status Update",
        "attachments": [
            {
                "color": "good",
                "fields": [
                    {"title": "Incident ID", "value": "INC-20240101-120000", "short": True},
                    {"title": "Status", "value": "System Operational", "short": True},
                ],
            }
        ],
    }
    assert "Authorization" not in call.headers
    assert not action.idempotent


def test_webhook_url_key_is_masked_in_description_and_result(web: ScopedStub) -> None:
    web.route("POST", "/services/T1/B2/key", Reply(200))
    action = NotifyWebhook(Webhook(url=f"{web.url}/services/T1/B2/key"), text="hi", fields={})
    result = action.run(context([]))
    host = web.url.removeprefix("http://").split("/")[0]
    assert action.describe().startswith(f"POST http://{host}/… ")
    assert all("B2/key" not in text for text in (action.describe(), result.summary, result.output))


def test_customer_email_posts_to_subject_body_with_bearer_token(
    web: ScopedStub, token: SecretRef
) -> None:
    web.route("POST", "/send", Reply(202))
    params = CustomerEmail(url=f"{web.url}/send", to="customers@voxflow.com", token=token)
    action = SendCustomerEmail(params, subject="VoxFlow Service Restored", body="We have resolved")
    result = action.run(context([]))
    (call,) = web.calls("POST", "/send")
    assert call.json() == {
        "to": "customers@voxflow.com",
        "subject": "VoxFlow Service Restored",
        "body": "We have resolved",
    }
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.headers["Idempotency-Key"]
    assert result.summary.startswith("emailed customers@voxflow.com")


def test_a_retried_write_carries_the_same_idempotency_key(web: ScopedStub) -> None:
    web.route("POST", "/send", Reply(503), Reply(202))
    params = CustomerEmail(url=f"{web.url}/send", to="c@example.com")
    SendCustomerEmail(params, subject="s", body="b", options=FAST).run(context([]))
    first, second = web.calls("POST", "/send")
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]


def test_every_http_step_satisfies_the_action_protocol(token: SecretRef) -> None:
    steps: list[Action] = [
        HealthCheck("http://app/health"),
        SetMaintenance(Maintenance(url="http://app/m", token=token), enabled=True),
        UpdateStatusPage(StatusPage(url="http://s/"), status="operational", message="m"),
        NotifyWebhook(Webhook(url="http://h/x"), text="t", fields={}),
        SendCustomerEmail(CustomerEmail(url="http://e/", to="a@b"), subject="s", body="b"),
    ]
    assert all(isinstance(step, Action) for step in steps)
    assert all(step.timeout > 0 for step in steps)


def test_read_metrics_reads_the_configured_fields(web: ScopedStub) -> None:
    web.route("GET", "/errors", Reply(200, json={"error_rate": 7.5}))
    web.route("GET", "/latency", Reply(200, json={"stats": {"p50": "840"}}))
    params = Metrics(
        error_rate_url=f"{web.url}/errors",
        response_time_url=f"{web.url}/latency",
        response_time_field="stats.p50",
    )
    assert read_metrics(params) == MetricsReading(error_rate=7.5, response_time_ms=840.0)


def test_read_metrics_leaves_unconfigured_metrics_empty_and_reuses_a_shared_url(
    web: ScopedStub,
) -> None:
    web.route("GET", "/m", Reply(200, json={"error_rate": 1, "avg_response_time": 200}))
    both = Metrics(error_rate_url=f"{web.url}/m", response_time_url=f"{web.url}/m")
    with httpx.Client() as client:
        assert read_metrics(both, client=client) == MetricsReading(1.0, 200.0)
        assert not client.is_closed
    assert len(web.calls("GET", "/m")) == 1
    assert read_metrics(Metrics()) == MetricsReading(error_rate=None, response_time_ms=None)


def test_read_metrics_retries_a_server_error(web: ScopedStub) -> None:
    web.route("GET", "/errors", Reply(503), Reply(200, json={"error_rate": 0.5}))
    reading = read_metrics(Metrics(error_rate_url=f"{web.url}/errors"), options=FAST)
    assert reading.error_rate == 0.5


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Reply(200, json={"other": 1}), "no field 'error_rate'"),
        (Reply(200, json={"error_rate": "high"}), "'high', not a number"),
        (Reply(200, json={"error_rate": True}), "True, not a number"),
        (Reply(200, body=b"<html>"), "not JSON"),
    ],
)
def test_read_metrics_rejects_an_unreadable_field(
    web: ScopedStub, answer: Reply, problem: str
) -> None:
    web.route("GET", "/errors", answer)
    with pytest.raises(PermanentError, match=problem):
        read_metrics(Metrics(error_rate_url=f"{web.url}/errors"))
