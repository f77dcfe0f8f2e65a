"""How a failed Web API call is told to the outbox's sender: try again later, or never.

`IncidentThread(strict=True)` and the other renderers of outbox messages raise what
`delivery_error` returns instead of swallowing the failure, so the sender retries with
backoff and a Slack outage never touches the rollback.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from bot.execution.outbox import RetryLater, Undeliverable

TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def delivery_error(method: str, exc: Exception) -> RetryLater | Undeliverable:
    """Classify a failed Web API call: worth trying again later, or never deliverable.

    429 carries Retry-After (https://api.slack.com/apis/rate-limits); 5xx and the
    `*_error`/`service_unavailable` codes are Slack's side; a dropped connection,
    a timeout or a cut answer (OSError, HTTPException) may succeed next time.
    Any other `ok: false` (channel_not_found, not_in_channel, invalid_blocks...) will not.
    """
    if isinstance(exc, SlackApiError):
        response = exc.response
        error = str(response.get("error") or "")
        if response.status_code == 429 or error == "ratelimited":
            after = (response.headers or {}).get("Retry-After") or (response.headers or {}).get(
                "retry-after"
            )
            delay = float(after) if after and str(after).isdigit() else None
            return RetryLater(f"{method}: rate limited", delay=delay)
        if response.status_code >= 500 or error in TRANSIENT_ERRORS:
            return RetryLater(f"{method}: Slack answered {response.status_code} {error}")
        return Undeliverable(f"{method}: Slack said {error}")
    return RetryLater(f"{method}: {type(exc).__name__}: {exc}")
