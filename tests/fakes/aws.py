"""moto's server on a free port, and boto3 connection settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from actions.params import AwsConnection


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start moto's server mode once per session; yield its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> AwsConnection:
    """Give fake credentials and an AwsConnection pointed at moto."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return AwsConnection(region="us-east-1", endpoint_url=moto_server)
