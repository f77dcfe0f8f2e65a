"""Start the real monitoring peers (Prometheus, Alertmanager) for a test, and stop them after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def require(binary: str, *, package: str) -> str:
    """The binary's path; if missing: fail under CI=true, else skip, saying how to get it."""
    found = shutil.which(binary)
    if found:
        return found
    message = (
        f"{binary} is not installed: run `tools/install-test-deps` (apt-get install {package})"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def daemon(argv: Sequence[str], *, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in the background, output to `log`; terminate it (then kill) afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
