"""HTTP steps: health polling, maintenance mode, status page, notifications, customer email.

Modules: `request` (the one retrying request helper, `send`, and its options,
scrubbing and throttled retry lines), `health` (the one health poller and the
HealthCheck step), `posts` (the steps that make one JSON POST: maintenance,
status page, webhook, customer email), `metrics` (reading the monitoring
numbers). Each module's docstring gives its design reasoning.
"""

from actions.http.health import Health, HealthCheck, check_health, poll_health
from actions.http.metrics import Metrics, MetricsReading, read_metrics
from actions.http.posts import (
    Communications,
    CustomerEmail,
    HealthState,
    Maintenance,
    NotifyWebhook,
    SendCustomerEmail,
    SetMaintenance,
    StatusPage,
    UpdateStatusPage,
    Webhook,
)
from actions.http.request import Backoff, HttpOptions, HttpStatusError, send

__all__ = [
    "Backoff",
    "Communications",
    "CustomerEmail",
    "Health",
    "HealthCheck",
    "HealthState",
    "HttpOptions",
    "HttpStatusError",
    "Maintenance",
    "Metrics",
    "MetricsReading",
    "NotifyWebhook",
    "SendCustomerEmail",
    "SetMaintenance",
    "StatusPage",
    "UpdateStatusPage",
    "Webhook",
    "check_health",
    "poll_health",
    "read_metrics",
    "send",
]
