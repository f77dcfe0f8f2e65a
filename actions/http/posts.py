"""Steps that make one JSON POST: maintenance mode, status page, webhook, customer email.

- Tokens are read from their `SecretRef` only when a step runs (not when it
  is described or approved); a missing one is a permanent error naming where
  it was looked for, never the value. Webhook URLs are secrets in themselves
  (Slack's carry the key in the path), so they are shown by host only.
- Webhook and email posts carry an `Idempotency-Key` derived from run, step
  and body, so an API that honours it drops the duplicate a retried timeout
  could cause; state-setting posts (maintenance, status) do not need one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from actions.base import PermanentError, StepContext, StepResult
from actions.http.params import (
    CustomerEmail,
    Maintenance,
    StatusPage,
    Webhook,
)
from actions.http.request import (
    DEFAULT_OPTIONS,
    Call,
    HttpOptions,
    http_client,
    mask_url,
    reporter,
    send,
)
from actions.params import SecretRef

HealthState = Literal["operational", "degraded", "maintenance"]


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
    with http_client() as client:
        response = send(
            call,
            client=client,
            deadline=ctx.deadline,
            request_timeout=options.request_timeout,
            backoff=options.backoff,
            on_retry=reporter(ctx, step=step, every=options.emit_every),
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
        self,
        *,
        name: str,
        post: _Post,
        summary: str,
        timeout: float,
        options: HttpOptions,
        spec: dict[str, Any],
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._post = post
        self._summary = summary
        self._options = options
        self._spec = spec

    def spec(self) -> dict[str, Any]:
        """The step's own parameters; URL and token come from the environment's config."""
        return {**self._spec, "timeout": self.timeout}

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
        options: HttpOptions = DEFAULT_OPTIONS,
    ) -> None:
        state = "on" if enabled else "off"
        body = {"enabled": True, "message": params.message} if enabled else {"enabled": False}
        super().__init__(
            name=f"http.maintenance_{state}",
            post=_Post(params.url, body, params.token),
            summary=f"maintenance mode {state} at {params.url}",
            timeout=timeout,
            options=options,
            spec={"enabled": enabled},
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
        options: HttpOptions = DEFAULT_OPTIONS,
    ) -> None:
        super().__init__(
            name="http.status_page",
            post=_Post(params.url, {"status": status, "message": message}, params.token),
            summary=f"status page set to {status} at {params.url}",
            timeout=timeout,
            options=options,
            spec={"status": status, "message": message},
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
        options: HttpOptions = DEFAULT_OPTIONS,
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
            spec={"text": text, "fields": dict(fields), "color": color},
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
        options: HttpOptions = DEFAULT_OPTIONS,
    ) -> None:
        payload = {"to": params.to, "subject": subject, "body": body}
        super().__init__(
            name="http.customer_email",
            post=_Post(params.url, payload, params.token),
            summary=f"emailed {params.to} via {params.url}: {subject}",
            timeout=timeout,
            options=options,
            spec={"subject": subject, "body": body},
        )
