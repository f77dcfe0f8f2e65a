"""The real parts tests start (engines, servers, clusters): find them, or say why not.

A test that needs a part that is missing or did not start fails in CI (CI=true: .ci/run
sets it), where every part is installed and a skip would hide a test that never ran; on a
developer's machine it skips with the reason and the command that installs the part.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import NoReturn

import pytest

INSTALL = "tools/install-test-deps"


def unavailable(message: str) -> NoReturn:
    """Fail under CI, else skip, with `message` (what is missing and how to get it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(binary: str, *, package: str) -> str:
    """The binary's path, or fail (CI) / skip (locally) saying how to install it."""
    found = shutil.which(binary)
    if found is None:
        unavailable(f"{binary} is not installed: run `{INSTALL}` (apt-get install {package})")
    return found


def free_port() -> int:
    """A TCP port nothing listens on on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
