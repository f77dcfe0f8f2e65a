"""Docker application rollback: swap a container to a previous image over the Engine API."""

from __future__ import annotations

from typing import Literal

from actions.params import Strict


class DockerParams(Strict):
    """A container and the image repository its versions come from."""

    kind: Literal["docker"]
    container: str
    image: str
    socket: str = "/var/run/docker.sock"
    health_url: str | None = None
    stop_timeout: int = 10
