"""The registry check against Debian's docker-registry guarded by htpasswd (Basic challenge).

The registry answers an anonymous HEAD with 401 and `WWW-Authenticate: Basic`;
the check answers with the pull secret's credentials, and a wrong password is
refused, which blocks: the pods could not pull either.
"""

from __future__ import annotations

import base64
import importlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actions.registry import Pullable, check_manifest

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry

pytest_plugins = ["tests.fakes.dockerd"]

USER, PASSWORD = "ci-bot", "pull-s3cret"


@pytest.fixture
def guarded(dockerd: Engine, tmp_path: Path) -> Iterator[Registry]:
    """docker-registry with htpasswd auth on a free loopback port."""
    from tests.fakes.dockerd import missing, serve_registry

    with warnings.catch_warnings():  # bcrypt for htpasswd, from libxcrypt; no extra package
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            crypt = importlib.import_module("crypt")
        except ModuleNotFoundError:
            missing("Python's crypt module (bcrypt for htpasswd) is gone (Python 3.13+)")
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"{USER}:{hashed}\n")
    auth = {"auth": {"htpasswd": {"realm": "rbt", "path": str(htpasswd)}}}
    with serve_registry("rbt-registry-auth-", extra=auth, ready_status=401) as served:
        yield served


def push_with_auth(engine: Engine, registry: Registry, tag: str) -> str:
    """Tag the session's rbt-app:v1 into the guarded registry and push it with credentials."""
    repo = f"{registry.address}/rbt-app"
    engine.call("POST", "/images/rbt-app:v1/tag", params={"repo": repo, "tag": tag})
    header = base64.urlsafe_b64encode(
        json.dumps(
            {"username": USER, "password": PASSWORD, "serveraddress": registry.address}
        ).encode()
    ).decode()
    pushed = engine.call(
        "POST",
        f"/images/{repo}/push",
        params={"tag": tag},
        headers={"X-Registry-Auth": header},
        timeout=60,
    )
    assert '"error"' not in pushed.text, pushed.text
    return f"{repo}:{tag}"


def test_basic_challenge_is_answered_with_the_credentials(
    dockerd: Engine, guarded: Registry
) -> None:
    image = push_with_auth(dockerd, guarded, "v61")
    assert check_manifest(image, auth=(USER, PASSWORD)).pullable == Pullable.YES
    anonymous = check_manifest(image)
    assert anonymous.pullable == Pullable.NO
    assert anonymous.detail == f"{guarded.address} refuses {image} anonymously (HTTP 401)"
    wrong = check_manifest(image, auth=(USER, "wrong"))
    assert wrong.pullable == Pullable.NO
    assert wrong.detail == f"{guarded.address} refuses {image} with the pull secret (HTTP 401)"
    missing_tag = check_manifest(image.replace("v61", "v62"), auth=(USER, PASSWORD))
    assert missing_tag.pullable == Pullable.NO and "manifest unknown" in missing_tag.detail
