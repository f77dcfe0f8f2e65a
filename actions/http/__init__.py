"""HTTP steps: health polling, maintenance mode, status page, notifications, customer email.

Modules: `request` (the one retrying request helper, `send`, and its options,
scrubbing and throttled retry lines), `health` (the one health poller and the
HealthCheck step), `posts` (the steps that make one JSON POST: maintenance,
status page, webhook, customer email), `metrics` (reading the monitoring
numbers). Each module's docstring gives its design reasoning.

Only the light `params` module is imported with the package; every other name
is imported where it is first used (`actions.exports.lazy`), so reading the
config file imports no client (issue 16, point 6).
"""

from typing import TYPE_CHECKING

from actions.exports import lazy
from actions.http.params import (
    Communications,
    CustomerEmail,
    Maintenance,
    Metrics,
    MetricsReading,
    StatusPage,
    Webhook,
)

if TYPE_CHECKING:
    from actions.http.health import Health, HealthCheck, check_health, poll_health
    from actions.http.metrics import read_metrics
    from actions.http.posts import (
        HealthState,
        NotifyWebhook,
        SendCustomerEmail,
        SetMaintenance,
        UpdateStatusPage,
    )
    from actions.http.request import Backoff, HttpOptions, HttpStatusError, send

__getattr__ = lazy(
    __name__,
    {
        "Health": "health",
        "HealthCheck": "health",
        "check_health": "health",
        "poll_health": "health",
        "read_metrics": "metrics",
        "HealthState": "posts",
        "NotifyWebhook": "posts",
        "SendCustomerEmail": "posts",
        "SetMaintenance": "posts",
        "UpdateStatusPage": "posts",
        "Backoff": "request",
        "HttpOptions": "request",
        "HttpStatusError": "request",
        "send": "request",
    },
)

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
