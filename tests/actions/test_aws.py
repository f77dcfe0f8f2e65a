"""AWS error translation: which boto errors are retried, and what their messages carry."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from actions.aws import aws_errors
from actions.base import PermanentError, TemporaryError


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "ModifyListener")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_client_error("Throttling", 400), TemporaryError),
        (_client_error("InternalFailure", 500), TemporaryError),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), TemporaryError),
        (_client_error("ValidationError", 400), PermanentError),
    ],
)
def test_aws_errors_are_temporary_only_when_retrying_can_help(
    error: Exception, kind: type[Exception]
) -> None:
    with pytest.raises(kind) as caught, aws_errors("modify listener x"):
        raise error
    assert str(caught.value).startswith("modify listener x")


def test_validation_errors_carry_aws_message() -> None:
    expected = "ValidationError: ValidationError happened"
    with pytest.raises(PermanentError, match=expected), aws_errors("modify listener x"):
        raise _client_error("ValidationError", 400)
