"""The Docker Engine API client: the few calls a container swap needs, over the unix socket.

The procedures' `docker` commands go to the Engine API on its unix socket with
httpx (no CLI, no SDK), so the same code runs against the sandbox's fake engine
in tests. Errors follow the contract: connection failures and 5xx are
TemporaryError, 4xx PermanentError, each carrying Docker's message.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from actions.base import ActionError, PermanentError, TemporaryError


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


class DockerClient:
    """The few Engine API calls a container swap needs, over the daemon's unix socket."""

    def __init__(self, socket: str, *, api_version: str = "1.41", timeout: float = 10.0) -> None:
        self.socket = socket
        self._prefix = f"/v{api_version}"
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket), base_url="http://docker", timeout=timeout
        )

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
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                self._prefix + path,
                params=params,
                json=body,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as err:
            raise TemporaryError(f"cannot reach {self.socket}: {err}", delay=2.0) from err
        if response.status_code in ok:
            return response
        raise _engine_error(response)

    def ping(self) -> None:
        """Check the engine answers."""
        self._call("GET", "/_ping")

    def version(self) -> dict[str, Any]:
        """Return the engine's version document."""
        return dict(self._call("GET", "/version").json())

    def container(self, name: str) -> dict[str, Any] | None:
        """Inspect a container by name or id; None when there is none."""
        response = self._call("GET", f"/containers/{name}/json", ok=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

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

    def remove(self, container_id: str) -> bool:
        """Remove a stopped container; False when it was already gone."""
        response = self._call("DELETE", f"/containers/{container_id}", ok=(204, 404))
        return response.status_code == 204

    def create(self, name: str, body: dict[str, Any]) -> str | None:
        """Create a container named `name`; return its id, or None when the name is taken."""
        response = self._call(
            "POST", "/containers/create", params={"name": name}, body=body, ok=(201, 409)
        )
        return None if response.status_code == 409 else str(response.json()["Id"])

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


def short_id(image_or_container_id: str) -> str:
    """Return the 12-character id Docker shows."""
    return image_or_container_id.removeprefix("sha256:")[:12]
