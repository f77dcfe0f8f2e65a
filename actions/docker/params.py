"""The Docker target's parameters: pydantic only, so the config loads without the engine client."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from actions.params import SchemaLink, Strict

SWITCH_BACK_RESERVE = 20.0
"""Seconds of the step's deadline kept for switching back after a failed check."""


class DockerParams(Strict):
    """A container and the image repository its versions come from."""

    kind: Literal["docker"]
    container: str
    image: str
    socket: str = "/var/run/docker.sock"
    health_url: str | None = None
    stop_timeout: int = Field(default=10, ge=0)
    api_version: str | None = Field(default=None, pattern=r"^1\.\d+$")
    """None: negotiated from the engine's /version."""
    settle: float = Field(default=10.0, ge=0)
    """Seconds the new container must stay running, not restarting, before it counts."""
    health_timeout: float = Field(default=120.0, gt=0)
    keep_retired: int = Field(default=1, ge=0)
    """Renamed old containers (`<name>-rollback-<time>`) kept after a successful swap."""
    swap_timeout: float = Field(default=240.0, gt=0)
    schema_from: SchemaLink | None = None

    @model_validator(mode="after")
    def _times_fit(self) -> DockerParams:
        if self.settle >= self.health_timeout:
            raise ValueError(
                f"settle ({self.settle:g}s) must be shorter than health_timeout "
                f"({self.health_timeout:g}s)"
            )
        needed = self.stop_timeout + self.health_timeout + SWITCH_BACK_RESERVE
        if self.swap_timeout < needed:
            raise ValueError(
                f"swap_timeout ({self.swap_timeout:g}s) must leave room for stop_timeout, "
                f"health_timeout and {SWITCH_BACK_RESERVE:g}s to switch back: at least {needed:g}s"
            )
        return self
