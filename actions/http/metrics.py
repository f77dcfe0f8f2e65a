"""Reading the monitoring numbers: each configured URL's JSON, one dotted field each.

Each URL is fetched once through `send` (retried within a short timeout) and
shared when two metrics name the same URL; a missing or non-numeric field is a
PermanentError naming the URL and the field.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from actions.base import PermanentError
from actions.http.params import Metrics, MetricsReading
from actions.http.request import DEFAULT_OPTIONS, Call, HttpOptions, http_client, send


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
    options: HttpOptions = DEFAULT_OPTIONS,
) -> MetricsReading:
    """GET each configured metrics URL once (retrying within `timeout`) and read its field."""
    wanted = {
        "error_rate": (params.error_rate_url, params.error_rate_field),
        "response_time_ms": (params.response_time_url, params.response_time_field),
    }
    documents: dict[str, Any] = {}
    values: dict[str, float | None] = {}
    with http_client(client) as http:
        for metric, (url, path) in wanted.items():
            if url is None:
                values[metric] = None
                continue
            if url not in documents:
                documents[url] = _fetch_json(http, url, timeout=timeout, options=options)
            values[metric] = _field(documents[url], path, url=url)
    return MetricsReading(**values)
