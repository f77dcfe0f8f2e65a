"""The one request helper, `send`, and what every HTTP step shares: options, scrubbing, retry lines.

- Every request goes through one helper, `send`: a per-request timeout that
  never runs past the step's deadline, retries on 5xx, 429 and connection
  errors with exponential backoff (a server's `Retry-After` on 429/503 wins,
  and if it points past the deadline we stop at once instead of sleeping into
  it), and `HttpStatusError` (a `PermanentError`) on any other 4xx, carrying
  the status and a short excerpt of the body. Retrying until the step's own
  deadline, rather than a fixed attempt count, lets the plan's timeouts be the
  only knob; running out is permanent because the runner's deadline is spent.
- Tokens travel only in the `Authorization: Bearer` header, and are scrubbed
  from anything we turn into text: error messages, body excerpts (a server may
  echo them), emitted lines and log records.
- Writes do not follow redirects: httpx turns a redirected POST into a GET,
  which would silently drop the body, so a 3xx is a configuration error.
- Retry lines go to the incident thread through `ctx.emit`, throttled: a
  line when the kind of failure changes, otherwise at most one per interval.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from actions.base import PermanentError, StepContext

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
EXCERPT_CHARS = 200
LAST_TRY = 0.1
"""Seconds kept before a health deadline for one last short try."""
MASK = "***"


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


DEFAULT_OPTIONS = HttpOptions()


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
        if self.shown and self.shown != self.url:
            # The URL is hidden because its path is the key: an endpoint may echo the URL,
            # its path, or either one percent-encoded.
            parts = urlsplit(self.url)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            forms = {self.url, path, quote(self.url, safe=""), quote(path, safe="")}
            hidden += sorted((form for form in forms if form.strip("/")), key=len, reverse=True)
        return hidden

    def all_headers(self) -> dict[str, str]:
        """Return the headers to send, the bearer token included."""
        headers = dict(self.headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        return headers


@dataclass(frozen=True)
class Attempt:
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


def send_once(client: httpx.Client, call: Call, *, timeout: float) -> Attempt:
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
        return Attempt(None, f"bad URL ({exc})", fatal=True)
    except httpx.TimeoutException:
        return Attempt(None, f"no answer within {timeout:.1f} s")
    except httpx.TransportError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}")
    return Attempt(response)


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


def _retryable(attempt: Attempt) -> bool:
    """Tell whether trying again can help: no answer, 429 or 5xx."""
    response = attempt.response
    return response is None or response.status_code == 429 or response.status_code >= 500


def pause(
    attempt: Attempt,
    *,
    failures: int,
    backoff: Backoff,
    deadline: float,
    now: float | None = None,
) -> float | None:
    """Return the pause before the next try, or None when no try fits before the deadline.

    Backoff is shortened to leave one last try before the deadline; a server's
    Retry-After is not, since trying earlier than asked would be refused again.
    """
    room = deadline - (time.monotonic() if now is None else now) - LAST_TRY
    asked = retry_after(attempt.response) if attempt.response is not None else None
    if room <= 0 or (asked is not None and asked > room):
        return None
    return asked if asked is not None else min(backoff.delay(failures), room)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _refusal(call: Call, attempt: Attempt) -> HttpStatusError:
    assert attempt.response is not None
    response = attempt.response
    text = f"{call.label} answered {attempt.describe(call.secrets())}"
    if response.is_redirect:
        where = scrub(response.headers.get("Location", "?"), call.secrets())
        text += f" (redirect to {where}; configure the final URL)"
    return HttpStatusError(text, status=response.status_code)


def _gave_up(call: Call, attempt: Attempt, *, tries: int, seconds: float) -> PermanentError:
    asked = retry_after(attempt.response) if attempt.response is not None else None
    why = f" (the server asked to wait {asked:.0f} s)" if asked is not None else ""
    return PermanentError(
        f"{call.label} failed {plural(tries, 'time')} in {seconds:.1f} s and no retry fits "
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
        attempt = send_once(client, call, timeout=min(request_timeout, remaining))
        if attempt.fatal:
            raise PermanentError(f"{call.label}: {attempt.error}")
        if attempt.response is not None and attempt.response.is_success:
            return attempt.response
        failures += 1
        if not _retryable(attempt):
            raise _refusal(call, attempt)
        problem = attempt.describe(call.secrets())
        wait = pause(attempt, failures=failures, backoff=backoff, deadline=deadline)
        if wait is None:
            raise _gave_up(call, attempt, tries=failures, seconds=time.monotonic() - started)
        on_retry(attempt.gist(), f"{call.label}: {problem}; retry {failures} in {wait:.1f} s")
        time.sleep(wait)


class Throttle:
    """Pass a line on when its kind changes, otherwise at most once every `every` seconds."""

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._every = every
        self._clock = clock
        self._gist: str | None = None
        self._at = 0.0
        self._held = 0

    def __call__(self, gist: str, line: str) -> None:
        """Offer one line of kind `gist`."""
        now = self._clock()
        if gist == self._gist and now - self._at < self._every:
            self._held += 1
            return
        if self._held:
            line += f" ({self._held} similar not shown)"
        self._emit(line)
        self._gist, self._at, self._held = gist, now, 0


def reporter(ctx: StepContext, *, step: str, every: float) -> Callable[[str, str], None]:
    """Log every retry line with the incident id; emit them to the thread, throttled."""
    throttle = Throttle(ctx.emit, every=every, clock=ctx.ticker.monotonic)

    def report(gist: str, line: str) -> None:
        log.info("%s %s: %s", ctx.incident_id, step, line)
        throttle(gist, line)

    return report


@contextmanager
def http_client(client: httpx.Client | None = None) -> Iterator[httpx.Client]:
    """Use the given client, or open one for the block and close it after."""
    if client is not None:
        yield client
        return
    with httpx.Client() as own:
        yield own
