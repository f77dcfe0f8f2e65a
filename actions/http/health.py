"""Health polling: the one poller (`poll_health`), a one-shot probe, and the HealthCheck step.

Health polling replaces the procedures' `sleep 30; curl -f`: any answer other
than the expected status is "not yet" (like `curl -f`, which does not tell a
booting app from a broken one), so it polls until the deadline and reports how
long recovery took, or the last status when it never came. `poll_health` is
the one poller: `HealthCheck`, the blue-green switch, the configuration restart
and the Docker swap all call it. It returns a `Health` and leaves the wording of
a failure (and what to do about it: fail, switch back) to its caller; a URL
that can never be fetched ends it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given, stored_as
from actions.clock import SYSTEM, Ticker
from actions.http.request import (
    LAST_TRY,
    Attempt,
    Call,
    HttpOptions,
    http_client,
    pause,
    plural,
    reporter,
    send_once,
)

HEALTH_REQUEST_TIMEOUT = 5.0
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
) -> tuple[Attempt, bool]:
    """GET `url` once: the attempt, and whether it answered `expect_status` (None: any 2xx)."""
    attempt = send_once(client, Call("GET", url), timeout=timeout)
    response = attempt.response
    if response is None:
        return attempt, False
    if expect_status is None:
        return attempt, response.is_success
    return attempt, response.status_code == expect_status


def _health(url: str, attempt: Attempt, *, ok: bool, attempts: int, started: float) -> Health:
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
    with http_client() as client:
        attempt, ok = _probe(client, url, timeout=timeout, expect_status=expect_status)
    return _health(url, attempt, ok=ok, attempts=1, started=started)


def poll_health(
    url: str,
    *,
    deadline: float,
    expect_status: int | None = None,
    options: HttpOptions = HEALTH_OPTIONS,
    on_retry: Callable[[Health], None] = lambda health: None,
    ticker: Ticker = SYSTEM,
) -> Health:
    """GET `url` with backoff until it answers `expect_status` (None: any 2xx) or `deadline`.

    Always tries at least once. Returns the last probe's Health (never raises for
    an unhealthy URL: each caller words its own failure); a URL that can never be
    fetched (bad scheme, malformed) ends the polling at once. `on_retry` sees each
    failed attempt that will be retried, before the pause; it may raise to stop.
    """
    started = ticker.monotonic()
    attempts = 0
    with http_client() as client:
        while True:
            remaining = deadline - ticker.monotonic()
            timeout = max(LAST_TRY, min(options.request_timeout, remaining))
            attempt, ok = _probe(client, url, timeout=timeout, expect_status=expect_status)
            attempts += 1
            health = _health(url, attempt, ok=ok, attempts=attempts, started=started)
            health = replace(health, elapsed=ticker.monotonic() - started)
            if ok or attempt.fatal:
                return health
            wait = pause(
                attempt,
                failures=attempts,
                backoff=options.backoff,
                deadline=deadline,
                now=ticker.monotonic(),
            )
            if wait is None:
                return health
            on_retry(health)
            ticker.sleep(wait)


class HealthCheck(Step):
    """Poll a health URL with backoff until it answers `expect_status` or the deadline passes."""

    name: str = fixed("http.health")
    """`http.<check>`."""
    idempotent: bool = fixed(True)
    timeout: float = 300.0
    url: str = given(kw_only=False)
    options: HttpOptions = given(default=HEALTH_OPTIONS)
    expect_status: int = 200
    check: str = stored_as("name", default="health")
    """Which health check of the plan this is (`health`, `lb_health`): it names the step."""

    def __post_init__(self) -> None:
        self.name = f"http.{self.check}"

    def describe(self) -> str:
        """Say which URL is polled, for which status, for how long."""
        return (
            f"poll GET {self.url} until it answers {self.expect_status} (up to {self.timeout:g} s)"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Poll until healthy; raise PermanentError with the last answer at the deadline."""
        deadline = min(ctx.deadline, ctx.ticker.monotonic() + self.timeout)
        report = reporter(ctx, step=self.name, every=self.options.emit_every)
        health = poll_health(
            self.url,
            deadline=deadline,
            expect_status=self.expect_status,
            options=self.options,
            on_retry=lambda h: report(
                h.gist, f"{self.url} not healthy yet, {plural(h.attempts, 'attempt')}: {h.answer}"
            ),
            ticker=ctx.ticker,
        )
        if not health.ok:
            raise PermanentError(
                f"{self.url} not healthy after {health.elapsed:.1f} s, "
                f"{plural(health.attempts, 'attempt')}; last answer: {health.answer}"
            )
        summary = f"healthy after {health.elapsed:.1f} s, {plural(health.attempts, 'attempt')}"
        return StepResult(
            summary=summary,
            output=f"GET {self.url} answered {self.expect_status}: {summary}",
            data={
                "url": self.url,
                "attempts": health.attempts,
                "seconds": round(health.elapsed, 3),
            },
        )
