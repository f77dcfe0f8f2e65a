"""AWS plumbing shared by the actions that call AWS: the boto3 client and its errors.

Moved out of `actions.loadbalancer` so the blue-green switch and the S3 store
of configuration backups build clients and translate errors one way. Clients
get short timeouts and botocore's standard retries (3 attempts), so a slow AWS
answer fails a step's attempt instead of eating its deadline; the runner's
retries sit on top. Throttling, 5xx and connection failures are
`TemporaryError`; anything else AWS rejects is `PermanentError` carrying AWS's
own code and message.

The RDS steps in `actions.database` share only `aws_session`: they keep
botocore's default client settings and their own error mapping (a planning
mode, different retryable codes), which is not the same policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from actions.base import ActionError, PermanentError, TemporaryError
from actions.params import AwsConnection

THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "SlowDown",
    }
)


def aws_session(aws: AwsConnection) -> boto3.session.Session:
    """Open a boto3 session with the connection's profile and region."""
    return boto3.session.Session(profile_name=aws.profile, region_name=aws.region)


def aws_client(aws: AwsConnection, service: Literal["elbv2", "s3"]) -> Any:
    """Build a boto3 client for `service` from the connection settings."""
    config = Config(
        connect_timeout=5, read_timeout=20, retries={"mode": "standard", "max_attempts": 3}
    )
    return aws_session(aws).client(service, endpoint_url=aws.endpoint_url, config=config)


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn boto errors raised inside into TemporaryError / PermanentError about `what`."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(what, exc) from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise TemporaryError(f"{what}: cannot reach AWS: {exc}", delay=1.0) from exc
    except BotoCoreError as exc:
        raise PermanentError(f"{what}: {exc}") from exc


def _client_error(what: str, exc: ClientError) -> ActionError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "Unknown")
    message = error.get("Message", str(exc))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in THROTTLING or status == 429:
        return TemporaryError(f"{what}: AWS throttled the request ({code})", delay=2.0)
    if status >= 500:
        return TemporaryError(f"{what}: AWS error {status} {code}: {message}", delay=1.0)
    return PermanentError(f"{what}: {code}: {message}")
