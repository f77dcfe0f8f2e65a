"""The Docker Engine API client: the few calls a container swap needs, over the unix socket.

Own client or the Docker SDK for Python? Ours, because it is the shorter of the
two and is tested against a real dockerd (tests/fakes/dockerd.py). The swap
sends the engine's own documents back to it: a create body built from
inspect, each network's EndpointConfig as inspect shows it, a restart policy.
Here each call is one line of httpx, which the bot already uses for all HTTP.
The SDK's low-level `APIClient` takes the create body raw, but its
`connect_container_to_network` wants aliases, links, IPv4/IPv6 addresses and
driver options as separate arguments, its `version="auto"` takes whatever the
engine offers without a cap, and its errors (`NotFound`, `APIError`) would
still be mapped onto PermanentError/TemporaryError; that glue is about as long
as the calls below, and it would add `docker`, `requests` and `urllib3` to the
bot's image. What the SDK does better, running Docker credential helpers, we
leave out on purpose (actions.docker.auth: the bot does not execute binaries
named in a config file).

API version. Docker 29 refuses clients below 1.44 and Debian's dockerd 20.10
speaks at most 1.41, so no fixed version works everywhere: the client asks the
unversioned `GET /version` once and speaks the highest version both sides know,
the engine's `ApiVersion` capped at `MAX_API_VERSION` (the newest version whose
changes we read against what we send and read: from 1.44 create takes several
networks and from 1.45 Aliases drop the short id; we create with one network
and connect the others, and filter the short id, so both work), and never
below the engine's `MinAPIVersion`. `api_version` in the config overrides it.

Errors follow the contract: connection failures and 5xx are TemporaryError,
4xx PermanentError, each carrying Docker's message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx

from actions.base import ActionError, PermanentError, TemporaryError

MIN_API_VERSION = "1.41"
"""The oldest version we speak: Debian 12's dockerd 20.10."""
MAX_API_VERSION = "1.47"
"""The newest version whose changes we read (docs.docker.com/engine/api/version-history)."""


class EngineUnreachable(TemporaryError):
    """The engine's socket did not answer: nothing is known to have happened; try again."""


def _engine_error(response: httpx.Response) -> ActionError:
    """Turn an error answer into the contract's error, keeping Docker's message."""
    try:
        message = str(response.json().get("message") or "")
    except (ValueError, AttributeError):
        message = response.text.strip()
    message = message or f"HTTP {response.status_code}"
    if response.status_code >= 500:
        return TemporaryError(message, delay=2.0)
    return PermanentError(message)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def negotiate(engine: dict[str, Any], *, client_max: str = MAX_API_VERSION) -> str:
    """Pick the highest API version both the engine (its /version) and this client speak."""
    highest = str(engine.get("ApiVersion") or MIN_API_VERSION)
    lowest = str(engine.get("MinAPIVersion") or highest)
    chosen = min(highest, client_max, key=_version_key)
    if _version_key(chosen) < _version_key(lowest) or _version_key(chosen) < _version_key(
        MIN_API_VERSION
    ):
        raise PermanentError(
            f"the engine speaks API {lowest} to {highest}, this bot {MIN_API_VERSION} to "
            f"{client_max}: no version in common; set api_version in the target's config "
            "only if you know the engine accepts it"
        )
    return chosen


class DockerClient:
    """The Engine API calls a container swap needs, over the daemon's unix socket."""

    def __init__(
        self, socket: str, *, api_version: str | None = None, timeout: float = 10.0
    ) -> None:
        self.socket = socket
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket), base_url="http://docker", timeout=timeout
        )
        self._api_version = api_version

    @property
    def api_version(self) -> str:
        """The version spoken: the configured one, else negotiated on first use."""
        if self._api_version is None:
            self._api_version = negotiate(self.version())
        return self._api_version

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> DockerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
        versioned: bool = True,
    ) -> httpx.Response:
        prefix = f"/v{self.api_version}" if versioned else ""
        try:
            response = self._http.request(
                method,
                prefix + path,
                params=params,
                json=body,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as err:
            raise EngineUnreachable(f"cannot reach {self.socket}: {err}", delay=2.0) from err
        if response.status_code in ok:
            return response
        raise _engine_error(response)

    def ping(self) -> None:
        """Check the engine answers."""
        self._call("GET", "/_ping", versioned=False)

    def version(self) -> dict[str, Any]:
        """Return the engine's version document (asked without a version prefix)."""
        return dict(self._call("GET", "/version", versioned=False).json())

    def container(self, name: str) -> dict[str, Any] | None:
        """Inspect a container by name or id; None when there is none."""
        response = self._call("GET", f"/containers/{name}/json", ok=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def containers(self, *, name: str = "", labels: Sequence[str] = ()) -> list[dict[str, Any]]:
        """List all containers (running or not) whose name matches the regexp `name` and
        that carry every label given (`key=value`)."""
        wanted = {"name": [name]} if name else {}
        filters = json.dumps(wanted | ({"label": list(labels)} if labels else {}))
        params = {"all": "1", "filters": filters}
        return list(self._call("GET", "/containers/json", params=params).json())

    def exit_code(self, container_id: str) -> int | None:
        """The exit code of the container's last `die` event in the engine's event log.

        The log outlives the container (a `--rm` one is gone once it exits) but is kept
        in memory only and bounded (moby daemon/events/events.go, eventsLimit), so None
        when it is no longer there. `until` now makes the engine answer at once.
        """
        filters = {"type": ["container"], "container": [container_id], "event": ["die"]}
        params = {"since": "1", "until": f"{time.time():.9f}", "filters": json.dumps(filters)}
        response = self._call("GET", "/events", params=params)
        codes = [
            (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
            for event in _events(iter(response.text.splitlines()))
        ]
        known = [c for c in codes if c is not None]
        return int(known[-1]) if known else None

    def stop(self, container_id: str, *, timeout: int) -> str:
        """Stop a container, waiting up to `timeout` seconds; say what happened."""
        response = self._call(
            "POST",
            f"/containers/{container_id}/stop",
            params={"t": timeout},
            ok=(204, 304, 404),
            timeout=timeout + 30.0,
        )
        return {204: "stopped", 304: "was already stopped", 404: "was already gone"}[
            response.status_code
        ]

    def rename(self, container_id: str, name: str) -> None:
        """Give a container a new name."""
        self._call("POST", f"/containers/{container_id}/rename", params={"name": name}, ok=(204,))

    def update_restart_policy(self, container_id: str, policy: dict[str, Any]) -> None:
        """Change a container's restart policy."""
        body = {"RestartPolicy": policy}
        self._call("POST", f"/containers/{container_id}/update", body=body)

    def remove(self, container_id: str, *, force: bool = False) -> bool:
        """Remove a container (never its volumes); False when it was already gone."""
        params = {"force": "1"} if force else None
        response = self._call("DELETE", f"/containers/{container_id}", params=params, ok=(204, 404))
        return response.status_code == 204

    def create(self, name: str, body: dict[str, Any]) -> str | None:
        """Create a container named `name`; return its id, or None when the name is taken."""
        response = self._call(
            "POST", "/containers/create", params={"name": name}, body=body, ok=(201, 409)
        )
        return None if response.status_code == 409 else str(response.json()["Id"])

    def connect(self, network: str, container_id: str, endpoint: dict[str, Any]) -> None:
        """Connect a container to a network with the endpoint settings given."""
        body = {"Container": container_id, "EndpointConfig": endpoint}
        self._call("POST", f"/networks/{network}/connect", body=body)

    def start(self, container_id: str) -> None:
        """Start a container (already running is fine)."""
        self._call("POST", f"/containers/{container_id}/start", ok=(204, 304))

    def images(self, repository: str) -> list[dict[str, Any]]:
        """List the local images with a tag in `repository`."""
        filters = json.dumps({"reference": [repository]})
        return list(self._call("GET", "/images/json", params={"filters": filters}).json())

    def image(self, ref: str) -> dict[str, Any] | None:
        """Inspect a local image by reference or id; None when absent."""
        response = self._call("GET", f"/images/{ref}/json", ok=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def pull(self, ref: str, *, auth: str | None, on_progress: Callable[[str], None]) -> None:
        """Pull `ref` (`repo:tag` or `repo@digest`), passing the engine's progress lines on.

        `auth` is the X-Registry-Auth header (base64 JSON) or None for anonymous.
        The engine answers 200 and reports a failed pull inside the stream.
        """
        repo, sep, digest = ref.partition("@")
        if not sep:
            name, colon, tag = repo.rpartition(":")
            repo, digest = (name, tag) if colon and "/" not in tag else (repo, "latest")
        params = {"fromImage": repo, "tag": digest}
        headers = {"X-Registry-Auth": auth} if auth else {}
        path = f"/v{self.api_version}/images/create"
        try:
            with self._http.stream(
                "POST", path, params=params, headers=headers, timeout=None
            ) as response:
                if response.status_code != 200:
                    response.read()
                    err = _engine_error(response)
                    raise err.__class__(f"pull of {ref} failed: {err}")
                for event in _events(response.iter_lines()):
                    if event.get("error"):
                        raise PermanentError(f"pull of {ref} failed: {event['error']}")
                    on_progress(_progress_line(event))
        except httpx.TransportError as err:
            raise EngineUnreachable(f"cannot reach {self.socket}: {err}", delay=2.0) from err


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            yield dict(json.loads(line))


def _progress_line(event: dict[str, Any]) -> str:
    layer = f"{event['id']}: " if event.get("id") else ""
    return f"{layer}{event.get('status', '')} {event.get('progress', '')}".rstrip()


def short_id(image_or_container_id: str) -> str:
    """Return the 12-character id Docker shows."""
    return image_or_container_id.removeprefix("sha256:")[:12]
