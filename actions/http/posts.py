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

import abc
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
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


class _PostStep(Step):
    """The shape of the steps that make one JSON POST: they say what they send (`_post`)."""

    options: HttpOptions = given(default=DEFAULT_OPTIONS)

    @abc.abstractmethod
    def _post(self) -> _Post:
        """The POST this step makes."""

    @abc.abstractmethod
    def _summary(self) -> str:
        """One line on what the POST did, for the step's result."""

    def describe(self) -> str:
        """Say exactly what will be POSTed where (never the token)."""
        return self._post().describe()

    def run(self, ctx: StepContext) -> StepResult:
        """Send the POST, retrying transient failures until the step's deadline."""
        return _run_post(
            self._post(),
            ctx,
            step=self.name,
            summary=self._summary(),
            options=self.options,
            keyed=not self.idempotent,
        )


class SetMaintenance(_PostStep):
    """Turn the app's maintenance mode on (with the procedures' message) or off."""

    name: str = fixed("http.maintenance_on")
    """`http.maintenance_off` when `enabled` is false."""
    idempotent: bool = fixed(True)
    timeout: float = 30.0
    params: Maintenance = given(kw_only=False)
    enabled: bool

    def __post_init__(self) -> None:
        self.name = f"http.maintenance_{self._state}"

    @property
    def _state(self) -> str:
        return "on" if self.enabled else "off"

    def _post(self) -> _Post:
        on = {"enabled": True, "message": self.params.message}
        return _Post(self.params.url, on if self.enabled else {"enabled": False}, self.params.token)

    def _summary(self) -> str:
        return f"maintenance mode {self._state} at {self.params.url}"


class UpdateStatusPage(_PostStep):
    """Set the public status page to a state with a message."""

    name: str = fixed("http.status_page")
    idempotent: bool = fixed(True)
    timeout: float = 30.0
    params: StatusPage = given(kw_only=False)
    status: HealthState
    message: str

    def _post(self) -> _Post:
        body = {"status": self.status, "message": self.message}
        return _Post(self.params.url, body, self.params.token)

    def _summary(self) -> str:
        return f"status page set to {self.status} at {self.params.url}"


class NotifyWebhook(_PostStep):
    """Post a Slack-compatible message with an attachment of fields to an incoming webhook."""

    name: str = fixed("http.webhook")
    idempotent: bool = fixed(False)
    timeout: float = 30.0
    params: Webhook = given(kw_only=False)
    text: str
    fields: dict[str, str]
    color: str = "good"

    def _post(self) -> _Post:
        attachment = {
            "color": self.color,
            "fields": [{"title": k, "value": v, "short": True} for k, v in self.fields.items()],
        }
        body = {"text": self.text, "attachments": [attachment]}
        return _Post(self.params.url, body, shown=mask_url(self.params.url))

    def _summary(self) -> str:
        return f"notified the webhook at {urlsplit(self.params.url).netloc}: {self.text}"


class SendCustomerEmail(_PostStep):
    """Send the customer notification through the configured email API."""

    name: str = fixed("http.customer_email")
    idempotent: bool = fixed(False)
    timeout: float = 60.0
    params: CustomerEmail = given(kw_only=False)
    subject: str
    body: str

    def _post(self) -> _Post:
        payload = {"to": self.params.to, "subject": self.subject, "body": self.body}
        return _Post(self.params.url, payload, self.params.token)

    def _summary(self) -> str:
        return f"emailed {self.params.to} via {self.params.url}: {self.subject}"
