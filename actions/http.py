"""HTTP steps: health polling, maintenance mode, status page, notifications, customer email.

Design reasoning:

- Every request goes through one helper, `send`: a per-request timeout that
  never runs past the step's deadline, retries on 5xx, 429 and connection
  errors with exponential backoff (a server's `Retry-After` on 429/503 wins,
  and if it points past the deadline we stop at once instead of sleeping into
  it), and `HttpStatusError` (a `PermanentError`) on any other 4xx, carrying
  the status and a short excerpt of the body. Retrying until the step's own
  deadline, rather than a fixed attempt count, lets the plan's timeouts be the
  only knob; running out is permanent because the runner's deadline is spent.
- Health polling replaces the procedures' `sleep 30; curl -f`: any answer
  other than the expected status is "not yet" (like `curl -f`, which does not
  tell a booting app from a broken one), so it polls until the deadline and
  reports how long recovery took, or the last status when it never came.
  `poll_health` is the one poller: `HealthCheck`, the blue-green switch, the
  configuration restart and the Docker swap all call it. It returns a `Health`
  and leaves the wording of a failure (and what to do about it: fail, switch
  back) to its caller; a URL that can never be fetched ends it at once.
- Tokens are read from their `SecretRef` only when a step runs (not when it
  is described or approved), travel only in the `Authorization: Bearer`
  header, and are scrubbed from anything we turn into text: error messages,
  body excerpts (a server may echo them), emitted lines and log records.
  Webhook URLs are secrets in themselves (Slack's carry the key in the path),
  so they are shown by host only.
- Writes do not follow redirects: httpx turns a redirected POST into a GET,
  which would silently drop the body, so a 3xx is a configuration error.
  Webhook and email posts carry an `Idempotency-Key` derived from run, step
  and body, so an API that honours it drops the duplicate a retried timeout
  could cause; state-setting posts (maintenance, status) do not need one.
- Retry lines go to the incident thread through `ctx.emit`, throttled: a
  line when the kind of failure changes, otherwise at most one per interval.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from actions.base import PermanentError, StepContext, StepResult
from actions.params import SecretRef, Strict

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
HEALTH_REQUEST_TIMEOUT = 5.0
EXCERPT_CHARS = 200
LAST_TRY = 0.1
"""Seconds kept before a health deadline for one last short try."""
MASK = "***"


class Maintenance(Strict):
    """The app's admin endpoint that turns maintenance mode on and off."""

    url: str
    token: SecretRef | None = None
    message: str = "Emergency maintenance - system rollback in progress"


class Metrics(Strict):
    """Where the monitoring numbers are read; each URL answers JSON with the named field."""

    error_rate_url: str | None = None
    error_rate_field: str = "error_rate"
    response_time_url: str | None = None
    response_time_field: str = "avg_response_time"


class StatusPage(Strict):
    """A status page API taking {status, message}."""

    url: str
    token: SecretRef | None = None


class Webhook(Strict):
    """An incoming webhook for internal notifications (Slack-compatible JSON)."""

    url: str


class CustomerEmail(Strict):
    """An email API taking {to, subject, body}."""

    url: str
    to: str
    token: SecretRef | None = None


class Communications(Strict):
    """Which post-rollback communications run for an environment."""

    status_page: StatusPage | None = None
    internal_webhook: Webhook | None = None
    customer_email: CustomerEmail | None = None


HealthState = Literal["operational", "degraded", "maintenance"]


class HttpStatusError(PermanentError):
    """A request refused for good (4xx other than 429, or a redirected write)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Backoff:
    """Exponential delays between attempts: first, first*factor, ..., at most cap."""

    first: float = 0.2
    factor: float = 2.0
    cap: float = 5.0

    def delay(self, failures: int) -> float:
        """Return the wait after the `failures`-th failure in a row."""
        return min(self.cap, self.first * self.factor ** max(0, failures - 1))


@dataclass(frozen=True)
class HttpOptions:
    """How a step makes requests: per-request timeout, backoff, how often retries are emitted."""

    request_timeout: float = REQUEST_TIMEOUT
    backoff: Backoff = Backoff()
    emit_every: float = 10.0


@dataclass(frozen=True)
class Call:
    """One request to make; `shown` is the URL as it may appear in text."""

    method: str
    url: str
    body: Any = None
    token: SecretStr | None = None
    shown: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Name the request for messages, e.g. `POST https://status.example/api`."""
        return f"{self.method} {self.shown or self.url}"

    def secrets(self) -> list[str]:
        """List the strings that must never appear in text."""
        hidden = [self.token.get_secret_value()] if self.token else []
        return hidden + ([self.url] if self.shown and self.shown != self.url else [])

    def all_headers(self) -> dict[str, str]:
        """Return the headers to send, the bearer token included."""
        headers = dict(self.headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        return headers


@dataclass(frozen=True)
class _Attempt:
    """What one try produced: a response, or why there was none."""

    response: httpx.Response | None
    error: str = ""
    fatal: bool = False
    """True when no retry can help: the URL itself is unusable."""

    def gist(self) -> str:
        """Return the kind of outcome (status or error class), for throttling."""
        return str(self.response.status_code) if self.response is not None else self.error

    def describe(self, secrets: list[str]) -> str:
        """Say what happened in one line, secrets scrubbed."""
        if self.response is None:
            return scrub(self.error, secrets)
        response = self.response
        excerpt = " ".join(response.text.split())[:EXCERPT_CHARS]
        text = f"{response.status_code} {response.reason_phrase}" + (
            f": {excerpt}" if excerpt else ""
        )
        return scrub(text, secrets)


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` with a mask."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def mask_url(url: str) -> str:
    """Show a URL by scheme and host only, for URLs that carry a key in their path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path.strip("/") else url


def _send_once(client: httpx.Client, call: Call, *, timeout: float) -> _Attempt:
    try:
        response = client.request(
            call.method,
            call.url,
            json=call.body,
            headers=call.all_headers(),
            timeout=timeout,
            follow_redirects=call.method == "GET",
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return _Attempt(None, f"bad URL ({exc})", fatal=True)
    except httpx.TimeoutException:
        return _Attempt(None, f"no answer within {timeout:.1f} s")
    except httpx.TransportError as exc:
        return _Attempt(None, f"{type(exc).__name__}: {exc}")
    return _Attempt(response)


def retry_after(response: httpx.Response) -> float | None:
    """Return the seconds a 429/503 asks us to wait, or None if it does not say."""
    value = response.headers.get("Retry-After")
    if response.status_code not in (429, 503) or not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _retryable(attempt: _Attempt) -> bool:
    """Tell whether trying again can help: no answer, 429 or 5xx."""
    response = attempt.response
    return response is None or response.status_code == 429 or response.status_code >= 500


def _pause(attempt: _Attempt, *, failures: int, backoff: Backoff, deadline: float) -> float | None:
    """Return the pause before the next try, or None when no try fits before the deadline.

    Backoff is shortened to leave one last try before the deadline; a server's
    Retry-After is not, since trying earlier than asked would be refused again.
    """
    room = deadline - time.monotonic() - LAST_TRY
    asked = retry_after(attempt.response) if attempt.response is not None else None
    if room <= 0 or (asked is not None and asked > room):
        return None
    return asked if asked is not None else min(backoff.delay(failures), room)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _refusal(call: Call, attempt: _Attempt) -> HttpStatusError:
    assert attempt.response is not None
    response = attempt.response
    text = f"{call.label} answered {attempt.describe(call.secrets())}"
    if response.is_redirect:
        where = scrub(response.headers.get("Location", "?"), call.secrets())
        text += f" (redirect to {where}; configure the final URL)"
    return HttpStatusError(text, status=response.status_code)


def _gave_up(call: Call, attempt: _Attempt, *, tries: int, seconds: float) -> PermanentError:
    asked = retry_after(attempt.response) if attempt.response is not None else None
    why = f" (the server asked to wait {asked:.0f} s)" if asked is not None else ""
    return PermanentError(
        f"{call.label} failed {_plural(tries, 'time')} in {seconds:.1f} s and no retry fits "
        f"before the step's deadline{why}; last: {attempt.describe(call.secrets())}"
    )


def send(
    call: Call,
    *,
    client: httpx.Client,
    deadline: float,
    request_timeout: float = REQUEST_TIMEOUT,
    backoff: Backoff = Backoff(),
    on_retry: Callable[[str, str], None] = lambda gist, line: None,
) -> httpx.Response:
    """Send `call` until it gets a 2xx, retrying transient failures until `deadline`."""
    started = time.monotonic()
    failures = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PermanentError(f"{call.label}: no time left before the step's deadline")
        attempt = _send_once(client, call, timeout=min(request_timeout, remaining))
        if attempt.fatal:
            raise PermanentError(f"{call.label}: {attempt.error}")
        if attempt.response is not None and attempt.response.is_success:
            return attempt.response
        failures += 1
        if not _retryable(attempt):
            raise _refusal(call, attempt)
        problem = attempt.describe(call.secrets())
        wait = _pause(attempt, failures=failures, backoff=backoff, deadline=deadline)
        if wait is None:
            raise _gave_up(call, attempt, tries=failures, seconds=time.monotonic() - started)
        on_retry(attempt.gist(), f"{call.label}: {problem}; retry {failures} in {wait:.1f} s")
        time.sleep(wait)


class Throttle:
    """Pass a line on when its kind changes, otherwise at most once every `every` seconds."""

    def __init__(self, emit: Callable[[str], None], *, every: float) -> None:
        self._emit = emit
        self._every = every
        self._gist: str | None = None
        self._at = 0.0
        self._held = 0

    def __call__(self, gist: str, line: str) -> None:
        """Offer one line of kind `gist`."""
        now = time.monotonic()
        if gist == self._gist and now - self._at < self._every:
            self._held += 1
            return
        if self._held:
            line += f" ({self._held} similar not shown)"
        self._emit(line)
        self._gist, self._at, self._held = gist, now, 0


def _reporter(ctx: StepContext, *, step: str, every: float) -> Callable[[str, str], None]:
    """Log every retry line with the incident id; emit them to the thread, throttled."""
    throttle = Throttle(ctx.emit, every=every)

    def report(gist: str, line: str) -> None:
        log.info("%s %s: %s", ctx.incident_id, step, line)
        throttle(gist, line)

    return report


@contextmanager
def _client(client: httpx.Client | None = None) -> Iterator[httpx.Client]:
    """Use the given client, or open one for the block and close it after."""
    if client is not None:
        yield client
        return
    with httpx.Client() as own:
        yield own


HEALTH_OPTIONS = HttpOptions(request_timeout=HEALTH_REQUEST_TIMEOUT)


@dataclass(frozen=True)
class Health:
    """What probing a health URL found, once or until it passed or time ran out."""

    url: str
    ok: bool
    answer: str
    """The last answer, e.g. `503 Service Unavailable: db down` or `no answer within 5.0 s`."""
    status: int | None = None
    attempts: int = 1
    elapsed: float = 0.0

    @property
    def detail(self) -> str:
        """Say in one line what the URL last answered, e.g. `http://app/health answered 503`."""
        if self.status is not None:
            return f"{self.url} answered {self.status}"
        return f"{self.url}: {self.answer}"

    @property
    def gist(self) -> str:
        """Return the kind of answer (status or error), for throttling repeated lines."""
        return str(self.status) if self.status is not None else self.answer


def _probe(
    client: httpx.Client, url: str, *, timeout: float, expect_status: int | None
) -> tuple[_Attempt, bool]:
    """GET `url` once: the attempt, and whether it answered `expect_status` (None: any 2xx)."""
    attempt = _send_once(client, Call("GET", url), timeout=timeout)
    response = attempt.response
    if response is None:
        return attempt, False
    if expect_status is None:
        return attempt, response.is_success
    return attempt, response.status_code == expect_status


def _health(url: str, attempt: _Attempt, *, ok: bool, attempts: int, started: float) -> Health:
    status = attempt.response.status_code if attempt.response is not None else None
    return Health(
        url=url,
        ok=ok,
        answer=attempt.describe([]),
        status=status,
        attempts=attempts,
        elapsed=time.monotonic() - started,
    )


def check_health(
    url: str, *, timeout: float = HEALTH_REQUEST_TIMEOUT, expect_status: int | None = None
) -> Health:
    """GET `url` once; it passes on `expect_status` (None: any 2xx)."""
    started = time.monotonic()
    with _client() as client:
        attempt, ok = _probe(client, url, timeout=timeout, expect_status=expect_status)
    return _health(url, attempt, ok=ok, attempts=1, started=started)


def poll_health(
    url: str,
    *,
    deadline: float,
    expect_status: int | None = None,
    options: HttpOptions = HEALTH_OPTIONS,
    on_retry: Callable[[Health], None] = lambda health: None,
) -> Health:
    """GET `url` with backoff until it answers `expect_status` (None: any 2xx) or `deadline`.

    Always tries at least once. Returns the last probe's Health (never raises for
    an unhealthy URL: each caller words its own failure); a URL that can never be
    fetched (bad scheme, malformed) ends the polling at once. `on_retry` sees each
    failed attempt that will be retried, before the pause; it may raise to stop.
    """
    started = time.monotonic()
    attempts = 0
    with _client() as client:
        while True:
            remaining = deadline - time.monotonic()
            timeout = max(LAST_TRY, min(options.request_timeout, remaining))
            attempt, ok = _probe(client, url, timeout=timeout, expect_status=expect_status)
            attempts += 1
            health = _health(url, attempt, ok=ok, attempts=attempts, started=started)
            if ok or attempt.fatal:
                return health
            wait = _pause(attempt, failures=attempts, backoff=options.backoff, deadline=deadline)
            if wait is None:
                return health
            on_retry(health)
            time.sleep(wait)


class HealthCheck:
    """Poll a health URL with backoff until it answers `expect_status` or the deadline passes."""

    idempotent = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 300.0,
        expect_status: int = 200,
        name: str = "health",
        options: HttpOptions = HEALTH_OPTIONS,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.expect_status = expect_status
        self.name = f"http.{name}"
        self.options = options

    def describe(self) -> str:
        """Say which URL is polled, for which status, for how long."""
        return (
            f"poll GET {self.url} until it answers {self.expect_status} (up to {self.timeout:g} s)"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Poll until healthy; raise PermanentError with the last answer at the deadline."""
        deadline = min(ctx.deadline, time.monotonic() + self.timeout)
        report = _reporter(ctx, step=self.name, every=self.options.emit_every)
        health = poll_health(
            self.url,
            deadline=deadline,
            expect_status=self.expect_status,
            options=self.options,
            on_retry=lambda h: report(h.gist, f"{self.url} not healthy yet: {h.answer}"),
        )
        if not health.ok:
            raise PermanentError(
                f"{self.url} not healthy after {health.elapsed:.1f} s, "
                f"{_plural(health.attempts, 'attempt')}; last answer: {health.answer}"
            )
        summary = f"healthy after {health.elapsed:.1f} s, {_plural(health.attempts, 'attempt')}"
        return StepResult(
            summary=summary,
            output=f"GET {self.url} answered {self.expect_status}: {summary}",
            data={
                "url": self.url,
                "attempts": health.attempts,
                "seconds": round(health.elapsed, 3),
            },
        )


@dataclass(frozen=True)
class _Post:
    """A JSON POST an action will make, before its token is read."""

    url: str
    body: dict[str, Any]
    token: SecretRef | None = None
    shown: str = ""

    def describe(self) -> str:
        """Say where the body goes and whether a bearer token goes with it (never its value)."""
        where = self.shown or self.url
        auth = f" with a bearer token from {_source(self.token)}" if self.token else ""
        return f"POST {where} {json.dumps(self.body, ensure_ascii=False)}{auth}"


def _source(ref: SecretRef) -> str:
    return f"${ref.env}" if ref.env is not None else f"file {ref.file}"


def _read_token(ref: SecretRef | None, *, step: str) -> SecretStr | None:
    """Read a token now; a missing one is a permanent error that names where it was looked for."""
    if ref is None:
        return None
    try:
        return ref.read()
    except (KeyError, OSError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) else exc.strerror or type(exc).__name__
        raise PermanentError(
            f"{step}: cannot read its token from {_source(ref)}: {reason}"
        ) from None


def _idempotency_key(ctx: StepContext, *, step: str, body: dict[str, Any]) -> str:
    raw = json.dumps([ctx.run_id, step, body], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _run_post(
    post: _Post, ctx: StepContext, *, step: str, summary: str, options: HttpOptions, keyed: bool
) -> StepResult:
    """Send `post` within the step's deadline and report what was sent.

    `keyed` adds an Idempotency-Key, for steps whose repetition is a duplicate
    (an email); never for state-setting steps, where an API that deduplicates
    would drop a deliberate second "maintenance on" later in the same run.
    """
    key = _idempotency_key(ctx, step=step, body=post.body) if keyed else None
    call = Call(
        "POST",
        post.url,
        body=post.body,
        token=_read_token(post.token, step=step),
        shown=post.shown,
        headers={"Idempotency-Key": key} if key else {},
    )
    with _client() as client:
        response = send(
            call,
            client=client,
            deadline=ctx.deadline,
            request_timeout=options.request_timeout,
            backoff=options.backoff,
            on_retry=_reporter(ctx, step=step, every=options.emit_every),
        )
    where = post.shown or post.url
    sent = json.dumps(post.body, ensure_ascii=False)
    return StepResult(
        summary=f"{summary} ({response.status_code})",
        output=f"POST {where} -> {response.status_code}\n{sent}",
        data={"url": where, "status": response.status_code, "sent": post.body},
    )


class _PostAction:
    """Shared shape of the actions that make one JSON POST."""

    idempotent: bool

    def __init__(
        self, *, name: str, post: _Post, summary: str, timeout: float, options: HttpOptions
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._post = post
        self._summary = summary
        self._options = options

    def describe(self) -> str:
        """Say exactly what will be POSTed where (never the token)."""
        return self._post.describe()

    def run(self, ctx: StepContext) -> StepResult:
        """Send the POST, retrying transient failures until the step's deadline."""
        return _run_post(
            self._post,
            ctx,
            step=self.name,
            summary=self._summary,
            options=self._options,
            keyed=not self.idempotent,
        )


class SetMaintenance(_PostAction):
    """Turn the app's maintenance mode on (with the procedures' message) or off."""

    idempotent = True

    def __init__(
        self,
        params: Maintenance,
        *,
        enabled: bool,
        timeout: float = 30.0,
        options: HttpOptions = HttpOptions(),
    ) -> None:
        state = "on" if enabled else "off"
        body = {"enabled": True, "message": params.message} if enabled else {"enabled": False}
        super().__init__(
            name=f"http.maintenance_{state}",
            post=_Post(params.url, body, params.token),
            summary=f"maintenance mode {state} at {params.url}",
            timeout=timeout,
            options=options,
        )


class UpdateStatusPage(_PostAction):
    """Set the public status page to a state with a message."""

    idempotent = True

    def __init__(
        self,
        params: StatusPage,
        *,
        status: HealthState,
        message: str,
        timeout: float = 30.0,
        options: HttpOptions = HttpOptions(),
    ) -> None:
        super().__init__(
            name="http.status_page",
            post=_Post(params.url, {"status": status, "message": message}, params.token),
            summary=f"status page set to {status} at {params.url}",
            timeout=timeout,
            options=options,
        )


class NotifyWebhook(_PostAction):
    """Post a Slack-compatible message with an attachment of fields to an incoming webhook."""

    idempotent = False

    def __init__(
        self,
        params: Webhook,
        *,
        text: str,
        fields: dict[str, str],
        color: str = "good",
        timeout: float = 30.0,
        options: HttpOptions = HttpOptions(),
    ) -> None:
        attachment = {
            "color": color,
            "fields": [{"title": k, "value": v, "short": True} for k, v in fields.items()],
        }
        super().__init__(
            name="http.webhook",
            post=_Post(
                params.url, {"text": text, "attachments": [attachment]}, shown=mask_url(params.url)
            ),
            summary=f"notified the webhook at {urlsplit(params.url).netloc}: {text}",
            timeout=timeout,
            options=options,
        )


class SendCustomerEmail(_PostAction):
    """Send the customer notification through the configured email API."""

    idempotent = False

    def __init__(
        self,
        params: CustomerEmail,
        *,
        subject: str,
        body: str,
        timeout: float = 60.0,
        options: HttpOptions = HttpOptions(),
    ) -> None:
        payload = {"to": params.to, "subject": subject, "body": body}
        super().__init__(
            name="http.customer_email",
            post=_Post(params.url, payload, params.token),
            summary=f"emailed {params.to} via {params.url}: {subject}",
            timeout=timeout,
            options=options,
        )


@dataclass(frozen=True)
class MetricsReading:
    """The monitoring numbers read once; None where no URL is configured."""

    error_rate: float | None
    response_time_ms: float | None


def _field(document: Any, path: str, *, url: str) -> float:
    """Read the number at a dotted `path` of a JSON document."""
    value = document
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise PermanentError(f"GET {url}: no field {path!r} in the JSON answer")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError(f"GET {url}: field {path!r} is {value!r}, not a number")
    try:
        return float(value)
    except ValueError:
        raise PermanentError(f"GET {url}: field {path!r} is {value!r}, not a number") from None


def _fetch_json(client: httpx.Client, url: str, *, timeout: float, options: HttpOptions) -> Any:
    response = send(
        Call("GET", url),
        client=client,
        deadline=time.monotonic() + timeout,
        request_timeout=options.request_timeout,
        backoff=options.backoff,
    )
    try:
        return response.json()
    except ValueError:
        raise PermanentError(f"GET {url}: the answer is not JSON") from None


def read_metrics(
    params: Metrics,
    *,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
    options: HttpOptions = HttpOptions(),
) -> MetricsReading:
    """GET each configured metrics URL once (retrying within `timeout`) and read its field."""
    wanted = {
        "error_rate": (params.error_rate_url, params.error_rate_field),
        "response_time_ms": (params.response_time_url, params.response_time_field),
    }
    documents: dict[str, Any] = {}
    values: dict[str, float | None] = {}
    with _client(client) as http:
        for metric, (url, path) in wanted.items():
            if url is None:
                values[metric] = None
                continue
            if url not in documents:
                documents[url] = _fetch_json(http, url, timeout=timeout, options=options)
            values[metric] = _field(documents[url], path, url=url)
    return MetricsReading(**values)
