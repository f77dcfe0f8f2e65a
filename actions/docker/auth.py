"""Registry credentials for pulls: from the environment or a Docker config file, never the bot's.

Where Docker's own tools look, in order: `DOCKER_AUTH_CONFIG` (a JSON document
in the config file's format, as GitLab runners pass it), then
`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. An `auths` entry for
the registry named in the image reference (Docker Hub's key is
`https://index.docker.io/v1/`) gives `auth` (base64 `user:password`) or
`username`/`password`, or `identitytoken`. Credential helpers (`credsStore`,
`credHelpers`) are not run: the bot would have to execute a binary from the
config, so such a registry is pulled anonymously and the output says so.
The engine takes the credentials as the X-Registry-Auth header, base64url JSON.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

DOCKER_HUB = "https://index.docker.io/v1/"


def registry_of(ref: str) -> str:
    """Return the registry host a reference pulls from (`docker.io` when none is named)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _configs() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if os.environ.get("DOCKER_AUTH_CONFIG"):
        found.append(("DOCKER_AUTH_CONFIG", json.loads(os.environ["DOCKER_AUTH_CONFIG"])))
    directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    path = Path(directory) / "config.json"
    if path.is_file():
        found.append((str(path), json.loads(path.read_text())))
    return found


def _entry(auths: dict[str, Any], registry: str) -> dict[str, Any] | None:
    keys = [DOCKER_HUB, "docker.io", "index.docker.io"] if registry == "docker.io" else [registry]
    for key, entry in auths.items():
        bare = key.removeprefix("https://").removeprefix("http://").rstrip("/")
        if key in keys or bare in keys or bare.removesuffix("/v1") in keys:
            return dict(entry)
    return None


def _header(entry: dict[str, Any], registry: str) -> str:
    user, password = entry.get("username", ""), entry.get("password", "")
    if entry.get("auth"):
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    document: dict[str, str] = {
        "serveraddress": DOCKER_HUB if registry == "docker.io" else registry
    }
    if entry.get("identitytoken"):
        document["identitytoken"] = entry["identitytoken"]
    else:
        document |= {"username": user, "password": password}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def registry_auth(ref: str) -> tuple[str | None, str]:
    """Return (X-Registry-Auth header or None, where it came from in words) for pulling `ref`."""
    registry = registry_of(ref)
    helpers = False
    for source, config in _configs():
        entry = _entry(config.get("auths") or {}, registry)
        if entry is not None:
            return _header(entry, registry), f"{registry} from {source}"
        helpers = helpers or bool(config.get("credsStore") or config.get("credHelpers"))
    note = " (credential helpers are not run)" if helpers else ""
    return None, f"none for {registry}, pulling anonymously{note}"
