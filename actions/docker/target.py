"""The Docker target: a container whose image can be swapped for another version.

Rollback points are what ran here before, then what the host holds. The bot
records every container it replaces in a label on its successor
(`actions.docker.settings.HISTORY_LABEL`: image reference, image id, repo
digests, when it ran), so the list starts with the running container (marked
current), then the earlier deployments newest first, each by tag when the tag
still points at that image, else by digest (pulled again if the host no longer
has it); the version the last rollback moved away from is marked `avoid`.
Then come the repository's other local images, first those before the running
version, then those after it (likely newer releases, said so in the label).
What orders them is what the engine knows of each. A local `docker tag` or
build records when (moby daemon/images/image_tag.go, TagImage calls
imageStore.SetLastUpdated; inspect shows it as Metadata.LastTagTime, in
daemon/images/image_inspect.go LookupImage). A pull does not: it adds its
tag to the reference store only (moby distribution/pull_v2.go, pullTag calls
ReferenceStore.AddTag), so a pulled image's LastTagTime is Go's zero time
"0001-01-01T00:00:00Z" and the engine keeps no pull time at all. Its inspect
has RepoTags, RepoDigests and Created, the build time from the image config,
which reproducible builds (ko, Jib, buildpacks, SOURCE_DATE_EPOCH) fix at one
timestamp for every release. So: images whose tags are versions of the
running tag's form (`1.9`, `1.10`, `v2.3.1`; a suffix such as `-alpine` must
match) are ordered by version, numerically (1.9 before 1.10); the rest by
tag time, else by build time unless another image shares it (a fixed
timestamp orders nothing); an image with neither comes last, marked neither
earlier nor later. No age is shown that the engine did not record: a pulled
image says "pulled", a fixed build time is not shown.

An image not on the host can still be planned (tag or digest): the swap pulls
it before changing anything. Engine errors met while listing or planning
become PlanningError, so the modal shows one kind of error.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from actions.base import (
    Action,
    ActionError,
    Check,
    Finding,
    PlanningError,
    RollbackPoint,
    TargetPlan,
    rebuild_step,
)
from actions.clock import ago, utcnow
from actions.docker.auth import registry_of
from actions.docker.engine import DockerClient, short_id
from actions.docker.evidence import (
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    docker_evidence,
    setup_findings,
)
from actions.docker.health import last_check, state_problem
from actions.docker.params import DockerParams
from actions.docker.settings import HISTORY_LABEL
from actions.docker.swap import SwapContainer
from actions.http.request import plural

OCI_VERSION = "org.opencontainers.image.version"
RECENT_RESTART = 60.0
"""A container restarted by the engine less than this many seconds ago is not running steadily."""


def _repository(ref: str) -> str:
    """Return the repository part of `repo:tag` or `repo@digest` (a registry port is no tag)."""
    ref = ref.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    return name if sep and "/" not in tag else ref


def _time(value: Any) -> datetime | None:
    """Read an engine time: an int in lists, RFC 3339 (nanoseconds) in inspect."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if not value or str(value).startswith("0001-"):
        return None
    # Python reads at most microseconds; the engine writes nanoseconds.
    text = re.sub(r"\.(\d{1,6})\d*", r".\1", str(value).replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)(.*)")


def _version(ref: str) -> tuple[tuple[int, ...], str] | None:
    """Read the tag of `ref` as (numbers, suffix): `1.10-alpine` is ((1, 10), "-alpine")."""
    if "@" in ref:
        return None
    match = _VERSION.fullmatch(_tag(ref))
    if match is None:
        return None
    return tuple(int(n) for n in match[1].split(".")), match[2]


@dataclass(frozen=True)
class _Image:
    ref: str
    id: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    tagged: datetime | None = None
    """Metadata.LastTagTime: set by a local tag or build, never by a pull."""
    created: datetime | None = None
    """The build time from the image config: fixed for reproducible builds."""


def _comparable(ref: str, current: tuple[tuple[int, ...], str] | None) -> tuple[int, ...] | None:
    """The version numbers of `ref` when its tag has the running tag's form and differs."""
    found = _version(ref)
    if current is None or found is None or found[1] != current[1] or found[0] == current[0]:
        return None
    return found[0]


def _ordered_points(
    others: list[_Image],
    running: _Image | None,
    current: tuple[tuple[int, ...], str] | None,
    local: list[_Image],
    now: datetime,
) -> list[RollbackPoint]:
    """Order the images not deployed here: earlier ones first, then later, then unknown."""
    builds = Counter(i.created for i in local if i.created)

    def when(image: _Image) -> datetime | None:
        """The time that orders `image`: its tag time, else a build time no other shares."""
        if image.tagged:
            return image.tagged
        return image.created if image.created and builds[image.created] == 1 else None

    versions = {i.id: v for i in others if (v := _comparable(i.ref, current))}
    times = {i.id: t for i in others if i.id not in versions and (t := when(i))}
    by_version = sorted((i for i in others if i.id in versions), key=lambda i: versions[i.id])
    by_time = sorted((i for i in others if i.id in times), key=lambda i: (times[i.id], i.ref))
    mark = when(running) if running else None
    earlier = [i for i in by_version if current and versions[i.id] < current[0]][::-1]
    earlier += [i for i in by_time if mark is None or times[i.id] <= mark][::-1]
    return [
        *(_local_point(i, now, when(i), "") for i in earlier),
        *(
            _local_point(i, now, when(i), " · a later version than the running one")
            for i in reversed(by_version)
            if i not in earlier
        ),
        *(
            _local_point(
                i, now, when(i), f" · {'tagged' if i.tagged else 'built'} after the running version"
            )
            for i in reversed(by_time)
            if i not in earlier
        ),
        *(
            _local_point(i, now, None, "")
            for i in others
            if i.id not in versions and i.id not in times
        ),
    ]


def _local_point(image: _Image, now: datetime, when: datetime | None, later: str) -> RollbackPoint:
    """Label a local image with what the engine recorded of it, and no more."""
    others = [_tag(t) for t in image.tags if t != image.ref]
    label = _tag(image.ref) + (f" (also {', '.join(others)})" if others else "")
    label += f" · {short_id(image.id)} · on this host"
    if image.tagged:
        label += f", tagged {ago(image.tagged, now)}"
    elif not image.tags:
        label += ", pulled by digest (no tag)"
    elif image.digests:
        label += ", pulled"
    if not image.tagged and when:
        label += f", built {ago(when, now)}"
    return RollbackPoint(image.ref, label + later, created_at=when)


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
    """A container on one Docker host whose image can be swapped for another version."""

    def __init__(self, params: DockerParams, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.params = params
        self._clock = clock

    def _client(self) -> DockerClient:
        return DockerClient(self.params.socket, api_version=self.params.api_version)

    # -- points -----------------------------------------------------------------------------

    def points(self) -> list[RollbackPoint]:
        """The running version, earlier deployments newest first, then other local images."""
        with _planning_errors(), self._client() as client:
            container = client.container(self.params.container)
            local = self._local_images(client)
        now, points, seen = self._clock(), [], set()
        if container is not None:
            points.append(self._current_point(container, now))
            seen.add(container["Image"])
            entries = list(reversed(_history(container)))
            for number, entry in enumerate(entries):
                point = self._history_point(entry, local, now, last=number == 0)
                if point is not None and entry.get("id") not in seen:
                    points.append(point)
                    seen.add(entry.get("id"))
        running = next((i for i in local if container and i.id == container["Image"]), None)
        current = _version(container["Config"]["Image"]) if container else None
        others = [i for i in local if i.id not in seen]
        return points + _ordered_points(others, running, current, local, now)

    def _current_point(self, container: dict[str, Any], now: datetime) -> RollbackPoint:
        since = _time(container.get("Created"))
        ref = container["Config"]["Image"]
        unready = serving(container)
        running = container["State"].get("Running")
        label = f"{_tag(ref)} · {short_id(container['Image'])} · "
        label += "running" if running else str(container["State"]["Status"])
        label += f" since {ago(since, now)}" if since and running else ""
        return RollbackPoint(
            ref, label, created_at=since, is_current=True, version=ref, unready=unready
        )

    def _history_point(
        self, entry: dict[str, Any], local: list[_Image], now: datetime, *, last: bool
    ) -> RollbackPoint | None:
        image_id, ref = str(entry.get("id") or ""), str(entry.get("image") or "")
        by_tag = next((i for i in local if ref in i.tags and i.id == image_id), None)
        digests = [d for d in entry.get("digests") or [] if _repository(d) == self.params.image]
        if by_tag is None and not digests:
            return None
        point_ref = ref if by_tag is not None else digests[0]
        ran = _time(entry.get("until"))
        label = (
            f"{_tag(ref)} · {short_id(image_id)} · ran here until {ago(ran, now) if ran else '?'}"
        )
        label += "" if by_tag else " · by digest, pulled if needed"
        avoid = f"rolled back from {ago(ran, now) if ran else 'earlier'}" if last else ""
        return RollbackPoint(point_ref, label, created_at=ran, avoid=avoid)

    def _local_images(self, client: DockerClient) -> list[_Image]:
        repo, found = self.params.image, []
        for summary in client.images(repo):
            tags = sorted(t for t in summary.get("RepoTags") or [] if _repository(t) == repo)
            digests = [d for d in summary.get("RepoDigests") or [] if _repository(d) == repo]
            if not tags and not digests:
                continue
            info = client.image(summary["Id"]) or {}
            # An image pulled by digest alone (`repo@sha256:...`) has no tag: offered by digest.
            ref = next((t for t in tags if not t.endswith(":latest")), tags[0] if tags else "")
            found.append(
                _Image(
                    ref or digests[0],
                    summary["Id"],
                    tuple(tags),
                    tuple(digests),
                    _time((info.get("Metadata") or {}).get("LastTagTime")),
                    _time(summary.get("Created")),
                )
            )
        return found

    # -- checks -----------------------------------------------------------------------------

    def checks(self, ref: str | None) -> list[Check]:
        """Check the engine answers, the container runs and the target image is at hand."""
        with self._client() as client:
            engine = self._engine_check(client)
            if not engine.ok:
                skipped = "not checked: the engine is unreachable"
                return [
                    engine,
                    Check(self._running_name, False, skipped),
                    Check("target image at hand", False, skipped),
                ]
            container_check, container = self._container_check(client)
            return [engine, container_check, self._image_check(client, container, ref)]

    def evidence(self, ref: str | None) -> list[Finding]:
        """The reversibility verdict's evidence: checks weighed, a missing image asked for."""
        return docker_evidence(self, ref)

    def setup_findings(self) -> list[Finding]:
        """What the container's setup means for the rollback (`--rm`, a compose service)."""
        with _planning_errors(), self._client() as client:
            container = client.container(self.params.container)
            if container is None:
                return []
            labels = container["Config"].get("Labels") or {}
            project, service = labels.get(COMPOSE_PROJECT), labels.get(COMPOSE_SERVICE)
            replicas = []
            if project and service:
                wanted = [f"{COMPOSE_PROJECT}={project}", f"{COMPOSE_SERVICE}={service}"]
                replicas = [
                    c
                    for c in client.containers(labels=wanted)
                    if (c.get("Labels") or {}).get(COMPOSE_ONEOFF) != "True"
                ]
        return setup_findings(container, replicas)

    def image_version(self, ref: str | None) -> str | None:
        """The `org.opencontainers.image.version` label of the image `ref` names, if local."""
        with _planning_errors(), self._client() as client:
            container = client.container(self.params.container)
            if container is None:
                return None
            _, image = self._target(client, container, ref)
        labels = ((image or {}).get("Config") or {}).get("Labels") or {}
        return labels.get(OCI_VERSION)

    @property
    def _running_name(self) -> str:
        return f"container {self.params.container} running"

    def _engine_check(self, client: DockerClient) -> Check:
        name = "Docker engine reachable"
        try:
            version = client.version()
            spoken = client.api_version
        except ActionError as err:
            return Check(name, False, str(err))
        detail = f"Docker {version.get('Version')}, API {spoken}"
        detail += f" (engine up to {version.get('ApiVersion')})"
        return Check(name, True, f"{detail} at {self.params.socket}")

    def _container_check(self, client: DockerClient) -> tuple[Check, dict[str, Any] | None]:
        try:
            container = client.container(self.params.container)
        except ActionError as err:
            return Check(self._running_name, False, str(err)), None
        if container is None:
            return Check(self._running_name, False, "no such container"), None
        detail = f"{container['Config']['Image']} ({short_id(container['Image'])}), "
        problem = state_problem(container, restarts=None)
        if problem:
            return Check(self._running_name, False, detail + problem), container
        started = _time(container["State"].get("StartedAt"))
        restarts = int(container.get("RestartCount") or 0)
        if restarts and started and (self._clock() - started).total_seconds() < RECENT_RESTART:
            last = ago(started, self._clock())
            detail += f"running, but restarted {plural(restarts, 'time')}, last {last}"
            return Check(self._running_name, False, detail), container
        return Check(self._running_name, True, detail + "running"), container

    def _image_check(
        self, client: DockerClient, container: dict[str, Any] | None, ref: str | None
    ) -> Check:
        name = "target image at hand"
        if container is None:
            return Check(name, False, "not checked: no container to compare with")
        try:
            with _planning_errors():
                wanted, image = self._target(client, container, ref)
        except PlanningError as err:
            return Check(name, False, str(err))
        if image is None:
            return Check(
                name, True, f"{wanted} is not on the host: pulled from {registry_of(wanted)}"
            )
        return Check(name, True, f"{wanted} ({short_id(image['Id'])}) is on the host")

    # -- plan -------------------------------------------------------------------------------

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Plan the swap to `ref` (None: the latest earlier deployment not to avoid)."""
        with _planning_errors(), self._client() as client:
            container = client.container(self.params.container)
            if container is None:
                raise PlanningError(f"no container named {self.params.container} on this host")
            if not container["State"]["Running"] and not force:
                raise PlanningError(
                    f"container {self.params.container} is {container['State']['Status']}, "
                    "not running; force to swap it anyway"
                )
            wanted, image = self._target(client, container, ref)
        swap = SwapContainer(
            container=self.params.container,
            from_image=container["Config"]["Image"],
            from_image_id=container["Image"],
            to_image=wanted,
            to_image_id=image["Id"] if image else "",
            auto_remove=bool(container["HostConfig"].get("AutoRemove")),
            compose_service=_compose_service(container),
            **self._given(),
        )
        where = "on the host" if image else f"pulled from {registry_of(wanted)} first"
        note = f"{self.params.container} runs {swap.from_image}; rolling back to {wanted} ({where})"
        return TargetPlan(rollback=[swap], notes=[note])

    def _given(self) -> dict[str, Any]:
        """What a swap takes from this target's params, never from its stored spec."""
        p = self.params
        return {
            "socket": p.socket,
            "api_version": p.api_version,
            "stop_timeout": p.stop_timeout,
            "health_url": p.health_url,
            "settle": p.settle,
            "health_timeout": p.health_timeout,
            "keep_retired": p.keep_retired,
            "timeout": p.swap_timeout,
        }

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild the approved swap from its spec and this target's connection and timings."""
        swap = rebuild_step([SwapContainer], "a docker target", name, spec, **self._given())
        if not isinstance(swap, SwapContainer) or swap.container != self.params.container:
            raise PlanningError(
                f"the stored {name} step is for container {spec.get('container')}, "
                f"not this target's {self.params.container}"
            )
        return swap

    def _target(
        self, client: DockerClient, container: dict[str, Any], ref: str | None
    ) -> tuple[str, dict[str, Any] | None]:
        """Resolve `ref` to (reference, local image inspect or None when it must be pulled)."""
        if ref is None:
            ref = self._default(container)
        wanted = self._qualify(ref)
        image = client.image(wanted)
        if image is not None and image["Id"] == container["Image"]:
            raise PlanningError(
                f"container {self.params.container} already runs {wanted} ({short_id(image['Id'])})"
            )
        return wanted, image

    def _default(self, container: dict[str, Any]) -> str:
        for point in self.points():
            if not point.is_current and not point.avoid:
                return point.ref
        raise PlanningError(
            f"no earlier deployment or other local image of {self.params.image} to roll back to; "
            f"name a version (a tag, or {self.params.image}@sha256:...)"
        )

    def _qualify(self, ref: str) -> str:
        """Accept `repo:tag` or `repo@digest` of this repository, or a bare tag."""
        repo = self.params.image
        if ref == repo:
            return f"{repo}:latest"
        if not any(c in ref for c in ":/@"):
            return f"{repo}:{ref}"
        if _repository(ref) != repo:
            raise PlanningError(f"{ref} is not an image of repository {repo}")
        return ref if ref != _repository(ref) else f"{ref}:latest"


def serving(container: dict[str, Any]) -> str:
    """What keeps the container from serving, in words ('' when it runs and is healthy).

    A version runs only when its container runs and, if its image or `docker run` set a
    healthcheck, the engine's last verdict is `healthy` (State.Health.Status: `starting`
    until the first check passes, `unhealthy` after Retries failures; moby
    daemon/health.go, handleProbeResult). Without a healthcheck, running is all the
    engine knows.
    """
    problem = state_problem(container, restarts=None)
    if problem:
        return f"its container {problem}"
    health = (container["State"].get("Health") or {}).get("Status")
    if health == "unhealthy":
        return f"its container is unhealthy by its own healthcheck ({last_check(container)})"
    if health not in (None, "none", "healthy"):
        return f"its container's healthcheck is {health}, not yet healthy"
    return ""


def _tag(ref: str) -> str:
    """Return the tag (or short digest) of a reference, for labels."""
    if "@" in ref:
        return "@" + ref.split("@", 1)[1].removeprefix("sha256:")[:12]
    return ref.rpartition(":")[2]


def _compose_service(container: dict[str, Any]) -> str:
    """`project/service` of a container compose manages, else empty."""
    labels = container["Config"].get("Labels") or {}
    project, service = labels.get(COMPOSE_PROJECT), labels.get(COMPOSE_SERVICE)
    return f"{project}/{service}" if project and service else ""


def _history(container: dict[str, Any]) -> list[dict[str, Any]]:
    labels = (container.get("Config") or {}).get("Labels") or {}
    try:
        entries = json.loads(labels.get(HISTORY_LABEL) or "[]")
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
