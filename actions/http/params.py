"""The HTTP steps' parameters (maintenance, communications, metrics) and the metrics' reading.

They are part of the config file's schema, so they live apart from the
steps, which import httpx (issue 16, point 6).
"""

from __future__ import annotations

from dataclasses import dataclass

from actions.params import SecretRef, Strict


class Maintenance(Strict):
    """The app's admin endpoint that turns maintenance mode on and off."""

    url: str
    token: SecretRef | None = None
    message: str = "Emergency maintenance - system rollback in progress"


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


class Metrics(Strict):
    """Where the monitoring numbers are read; each URL answers JSON with the named field."""

    error_rate_url: str | None = None
    error_rate_field: str = "error_rate"
    response_time_url: str | None = None
    response_time_field: str = "avg_response_time"


@dataclass(frozen=True)
class MetricsReading:
    """The monitoring numbers read once; None where no URL is configured."""

    error_rate: float | None
    response_time_ms: float | None
