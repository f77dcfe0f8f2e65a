"""The Docker target: a container whose image can be swapped for an older local one.

Rollback points are the repository's local images, newest first. Engine errors
met while listing or planning become PlanningError, so the modal shows one
kind of error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from actions.base import ActionError, Check, PlanningError, RollbackPoint, TargetPlan
from actions.clock import ago, utcnow
from actions.docker.engine import DockerClient, short_id
from actions.docker.swap import SwapContainer
from actions.params import Strict


class DockerParams(Strict):
    """A container and the image repository its versions come from."""

    kind: Literal["docker"]
    container: str
    image: str
    socket: str = "/var/run/docker.sock"
    health_url: str | None = None
    stop_timeout: int = 10
    api_version: str = "1.41"
    health_interval: float = 1.0
    swap_timeout: float = 180.0


def _repository(ref: str) -> str:
    """Return the repository part of `repo:tag` (a registry port is not a tag)."""
    ref = ref.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    return name if sep and "/" not in tag else ref


def _created(image: dict[str, Any]) -> datetime:
    """Read an image's creation time: an int in lists, RFC 3339 in inspect."""
    value = image["Created"]
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class _Image:
    ref: str
    id: str
    created: datetime
    tags: tuple[str, ...] = ()


@contextmanager
def _planning_errors() -> Iterator[None]:
    """Report engine errors met while planning as PlanningError."""
    try:
        yield
    except PlanningError:
        raise
    except ActionError as err:
        raise PlanningError(f"Docker engine: {err}") from err


class DockerTarget:
    """A container on one Docker host whose image can be swapped for an older one."""

    def __init__(self, params: DockerParams, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.params = params
        self._clock = clock

    def _client(self) -> DockerClient:
        return DockerClient(self.params.socket, api_version=self.params.api_version)

    def points(self) -> list[RollbackPoint]:
        """List the repository's local images, newest first, the running one marked current."""
        with _planning_errors(), self._client() as client:
            container = client.container(self.params.container)
            images = self._repo_images(client)
        running = container["Image"] if container else None
        now = self._clock()
        return [self._point(image, image.id == running, now) for image in images]

    def _point(self, image: _Image, current: bool, now: datetime) -> RollbackPoint:
        tag = image.ref.rpartition(":")[2]
        others = [t.rpartition(":")[2] for t in image.tags if t != image.ref]
        label = tag + (f" (also {', '.join(others)})" if others else "")
        label += f" · {short_id(image.id)} · {ago(image.created, now)}"
        label += " · running" if current else ""
        return RollbackPoint(image.ref, label, created_at=image.created, is_current=current)

    def _repo_images(self, client: DockerClient) -> list[_Image]:
        repo, found = self.params.image, []
        for summary in client.images(repo):
            tags = sorted(t for t in summary.get("RepoTags") or [] if _repository(t) == repo)
            if not tags:
                continue
            ref = next((t for t in tags if not t.endswith(":latest")), tags[0])
            found.append(_Image(ref, summary["Id"], _created(summary), tuple(tags)))
        return sorted(found, key=lambda i: (i.created, i.ref), reverse=True)

    def checks(self, ref: str | None) -> list[Check]:
        """Check the engine answers, the container runs and the target image is here."""
        with self._client() as client:
            engine = self._engine_check(client)
            if not engine.ok:
                skipped = "not checked: the engine is unreachable"
                return [
                    engine,
                    Check(self._running_name, False, skipped),
                    Check("target image present locally", False, skipped),
                ]
            container_check, container = self._container_check(client)
            return [engine, container_check, self._image_check(client, container, ref)]

    @property
    def _running_name(self) -> str:
        return f"container {self.params.container} running"

    def _engine_check(self, client: DockerClient) -> Check:
        name = "Docker engine reachable"
        try:
            client.ping()
            version = client.version()
        except ActionError as err:
            return Check(name, False, str(err))
        detail = f"Docker {version.get('Version')}, API {version.get('ApiVersion')}"
        return Check(name, True, f"{detail} at {self.params.socket}")

    def _container_check(self, client: DockerClient) -> tuple[Check, dict[str, Any] | None]:
        try:
            container = client.container(self.params.container)
        except ActionError as err:
            return Check(self._running_name, False, str(err)), None
        if container is None:
            return Check(self._running_name, False, "no such container"), None
        state = container["State"]
        detail = (
            f"{container['Config']['Image']} ({short_id(container['Image'])}), {state['Status']}"
        )
        return Check(self._running_name, bool(state["Running"]), detail), container

    def _image_check(
        self, client: DockerClient, container: dict[str, Any] | None, ref: str | None
    ) -> Check:
        name = "target image present locally"
        if container is None:
            return Check(name, False, "not checked: no container to compare with")
        try:
            with _planning_errors():
                image = self._target(client, container, ref, force=True)
        except PlanningError as err:
            return Check(name, False, str(err))
        age = ago(image.created, self._clock())
        return Check(name, True, f"{image.ref} ({short_id(image.id)}, created {age})")

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Plan the swap to `ref` (None: the newest image older than the running one)."""
        with _planning_errors(), self._client() as client:
            container = client.container(self.params.container)
            if container is None:
                raise PlanningError(f"no container named {self.params.container} on this host")
            if not container["State"]["Running"] and not force:
                raise PlanningError(
                    f"container {self.params.container} is {container['State']['Status']}, "
                    "not running; force to swap it anyway"
                )
            running = self._running_image(client, container)
            target = self._target(client, container, ref, force=force)
        return TargetPlan(
            rollback=[self._swap(running, target)], notes=[self._note(running, target)]
        )

    def _swap(self, running: _Image, target: _Image) -> SwapContainer:
        p = self.params
        return SwapContainer(
            container=p.container,
            from_image=running.ref,
            from_image_id=running.id,
            to_image=target.ref,
            to_image_id=target.id,
            socket=p.socket,
            api_version=p.api_version,
            stop_timeout=p.stop_timeout,
            health_url=p.health_url,
            health_interval=p.health_interval,
            timeout=p.swap_timeout,
        )

    def _note(self, running: _Image, target: _Image) -> str:
        now = self._clock()
        return (
            f"{self.params.container} runs {running.ref} (built {ago(running.created, now)}); "
            f"rolling back to {target.ref} (built {ago(target.created, now)})"
        )

    def _running_image(self, client: DockerClient, container: dict[str, Any]) -> _Image:
        info = client.image(container["Image"])
        if info is None:
            raise PlanningError(
                f"the image of container {self.params.container} is not on the host"
            )
        return _Image(container["Config"]["Image"], info["Id"], _created(info))

    def _target(
        self, client: DockerClient, container: dict[str, Any], ref: str | None, *, force: bool
    ) -> _Image:
        running = self._running_image(client, container)
        if ref is None:
            return self._previous(client, running)
        wanted = self._qualify(ref)
        info = client.image(wanted)
        if info is None:
            raise PlanningError(
                f"image {wanted} is not on this host; pull it first (docker pull {wanted})"
            )
        image = _Image(wanted, info["Id"], _created(info))
        if image.id == running.id:
            raise PlanningError(
                f"container {self.params.container} already runs {wanted} ({short_id(image.id)})"
            )
        if image.created > running.created and not force:
            raise PlanningError(
                f"{wanted} is newer than the running {running.ref}; force to roll forward to it"
            )
        return image

    def _previous(self, client: DockerClient, running: _Image) -> _Image:
        older = [
            i
            for i in self._repo_images(client)
            if i.created < running.created and i.id != running.id
        ]
        if not older:
            raise PlanningError(
                f"no local image of {self.params.image} is older than the running {running.ref}; "
                f"pull the version to roll back to (docker pull {self.params.image}:<tag>)"
            )
        return older[0]

    def _qualify(self, ref: str) -> str:
        """Accept `repo:tag` of this repository, or a bare tag."""
        repo = self.params.image
        if ref == repo:
            return f"{repo}:latest"
        if not any(c in ref for c in ":/@"):
            return f"{repo}:{ref}"
        if _repository(ref) != repo:
            raise PlanningError(f"{ref} is not an image of repository {repo}")
        return ref if ref != _repository(ref) else f"{ref}:latest"
