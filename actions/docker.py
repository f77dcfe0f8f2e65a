"""Docker application rollback: swap a container to a previous image over the Engine API.

The procedures' script is `docker stop`, `docker rm`, `docker run` of the
previous tag, then a health check. Here the same steps go to the Engine API on
its unix socket with httpx (no CLI, no SDK), so the same code runs against the
sandbox's fake engine in tests.

Settings. Before anything is touched, the running container's settings are
turned into the create request that will recreate it and stored in
`ctx.memory`. The engine merges the image's Env, Labels, ExposedPorts and Cmd
into every container it creates and inspect cannot tell them apart from what
the operator set, so the old image's own values are subtracted first; copied
blindly, the old image's `APP_VERSION=1.2.4` or `PATH` would override the
values baked into the image being rolled back to. HostConfig (port bindings,
restart policy, binds, network mode, ...) is copied whole.

Resuming. The step is idempotent: memory records the phase it reached
(recorded, removed, created, started, done) and a rerun continues from there.
A container that memory says was recorded but is already gone is not an
error; a name conflict on create after a crash adopts the container if it is
the target image. The old container is stopped and removed by id, never by
name, so a rerun cannot remove the new one.

Failures. Once the old container is gone the host is in a state a person must
read, so every failure message says what was done, what failed with the
engine's own message, and what the host holds now (inspected at that moment).
A new container that fails to start is removed again, leaving the name free
for a manual `docker run`; one that starts and exits is kept for its logs.

Errors follow the contract: connection failures and 5xx are TemporaryError,
4xx PermanentError, each carrying Docker's message. Target methods turn them
into PlanningError so the modal shows one kind of error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from actions.base import (
    ActionError,
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    StepContext,
    StepResult,
    TargetPlan,
    TemporaryError,
)
from actions.http import HEALTH_REQUEST_TIMEOUT, Backoff, HttpOptions, poll_health
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


# -- Engine API client ------------------------------------------------------------


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


# -- small pure helpers -------------------------------------------------------------


def short_id(image_or_container_id: str) -> str:
    """Return the 12-character id Docker shows."""
    return image_or_container_id.removeprefix("sha256:")[:12]


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


def _age(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


_CARRIED_CONFIG = ("Cmd", "Entrypoint", "User", "WorkingDir")


def create_body(container: dict[str, Any], old_image: dict[str, Any], image: str) -> dict[str, Any]:
    """Build the create request that recreates `container` from `image`.

    Env entries, labels and exposed ports equal to the old image's own are
    dropped (the engine merged them in); HostConfig is copied whole.
    """
    config = container.get("Config") or {}
    host = dict(container.get("HostConfig") or {})
    baked_env = set(old_image.get("Env") or [])
    baked_labels = old_image.get("Labels") or {}
    baked_ports = old_image.get("ExposedPorts") or {}
    bound = host.get("PortBindings") or {}
    body: dict[str, Any] = {
        "Image": image,
        "Env": [e for e in config.get("Env") or [] if e not in baked_env],
        "Labels": {
            k: v for k, v in (config.get("Labels") or {}).items() if baked_labels.get(k) != v
        },
        "ExposedPorts": {p: {} for p in config.get("ExposedPorts") or {} if p not in baked_ports}
        | {p: {} for p in bound},
        "HostConfig": host,
    }
    for key in _CARRIED_CONFIG:
        if config.get(key) and config.get(key) != old_image.get(key):
            body[key] = config[key]
    return body


def _settings_summary(body: dict[str, Any]) -> str:
    """Say which settings are carried over, naming env vars but never their values."""
    host = body["HostConfig"]
    ports = ", ".join(
        f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{port}"
        for port, bindings in (host.get("PortBindings") or {}).items()
        for b in bindings or []
    )
    names = ", ".join(e.split("=", 1)[0] for e in body["Env"]) or "none"
    restart = (host.get("RestartPolicy") or {}).get("Name") or "no"
    return (
        f"env {names}; ports {ports or 'none'}; {len(body['Labels'])} labels; "
        f"restart {restart}; {len(host.get('Binds') or [])} binds"
    )


# -- the swap --------------------------------------------------------------------


def memory_key(container: str) -> str:
    """Return the `ctx.memory` key under which the swap of `container` keeps its record."""
    return f"docker.swap/{container}"


@dataclass
class SwapContainer:
    """Replace a container with one of another image, keeping its name and settings."""

    container: str
    from_image: str
    from_image_id: str
    to_image: str
    to_image_id: str
    socket: str = "/var/run/docker.sock"
    api_version: str = "1.41"
    stop_timeout: int = 10
    health_url: str | None = None
    health_interval: float = 1.0
    timeout: float = 180.0
    name: str = "docker.swap_container"
    idempotent: bool = True

    def describe(self) -> str:
        """Name the container, the image it runs and the image it will run."""
        text = (
            f"Swap container {self.container} from {self.from_image} "
            f"({short_id(self.from_image_id)}) to {self.to_image} ({short_id(self.to_image_id)}): "
            f"stop it (up to {self.stop_timeout}s), remove it, then create and start "
            f"{self.to_image} as {self.container} with the same env, labels, ports, "
            "restart policy and binds"
        )
        if self.health_url:
            text += f"; poll {self.health_url} until it answers 2xx"
        return text

    def run(self, ctx: StepContext) -> StepResult:
        """Swap the container, resuming from what memory recorded."""
        with DockerClient(self.socket, api_version=self.api_version) as client:
            return _Swap(self, ctx, client).run()


@dataclass
class _Swap:
    """One attempt at a SwapContainer step: its context, client and output lines."""

    action: SwapContainer
    ctx: StepContext
    client: DockerClient
    lines: list[str] = field(default_factory=list)

    @property
    def _old(self) -> str:
        return f"old container {self.action.container} ({self.action.from_image})"

    def run(self) -> StepResult:
        record = self.ctx.memory.get(memory_key(self.action.container))
        if record is None:
            current = self._current_for_fresh_start()
            if current is None:
                return self._result(skipped=True)
            record = self._record(current)
        if record["phase"] == "done":
            return self._result(skipped=True)
        if record["phase"] == "recorded":
            record = self._retire_old(record)
        if record["phase"] == "removed":
            record = self._create_new(record)
        if record["phase"] == "created":
            record = self._start_new(record)
        self._verify(record)
        self._save(record, phase="done")
        return self._result(skipped=False)

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self.ctx.emit(line)

    def _save(self, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Store a new copy of the record (a fresh value, so durable memory sees the write)."""
        record = {**record, **changes}
        self.ctx.memory[memory_key(self.action.container)] = record
        return record

    def _current_for_fresh_start(self) -> dict[str, Any] | None:
        """Inspect the container before anything changed; None when it already runs the target."""
        action = self.action
        current = self.client.container(action.container)
        if current is None:
            raise PermanentError(
                f"no container named {action.container} exists and no earlier attempt of this "
                "step is recorded; nothing was changed"
            )
        if current["Image"] == action.to_image_id and current["State"]["Running"]:
            return None
        if current["Image"] != action.from_image_id:
            raise PermanentError(
                f"container {action.container} now runs {current['Config']['Image']} "
                f"({short_id(current['Image'])}), not {action.from_image} "
                f"({short_id(action.from_image_id)}) as planned; nothing was changed"
            )
        problem = self._target_image_problem()
        if problem:
            raise PermanentError(f"{problem}; nothing was changed")
        return current

    def _record(self, current: dict[str, Any]) -> dict[str, Any]:
        old_image = self.client.image(current["Image"]) or {}
        body = create_body(current, old_image.get("Config") or {}, self.action.to_image)
        record = self._save(
            {"old_id": current["Id"], "name": current["Name"].lstrip("/"), "create": body},
            phase="recorded",
        )
        self._say(
            f"recorded {record['name']} ({self.action.from_image}): {_settings_summary(body)}"
        )
        return record

    def _target_image_problem(self) -> str | None:
        image = self.client.image(self.action.to_image)
        if image is None:
            return f"image {self.action.to_image} is no longer present on the host"
        if image["Id"] != self.action.to_image_id:
            return (
                f"{self.action.to_image} now points at image {short_id(image['Id'])}, not "
                f"{short_id(self.action.to_image_id)} as planned"
            )
        return None

    def _retire_old(self, record: dict[str, Any]) -> dict[str, Any]:
        try:
            outcome = self.client.stop(record["old_id"], timeout=self.action.stop_timeout)
        except ActionError as err:
            raise self._failure(
                err, f"{self._old} could not be stopped: {err}; nothing was removed"
            ) from err
        self._say(f"{self._old} {outcome}")
        try:
            removed = self.client.remove(record["old_id"])
        except ActionError as err:
            raise self._failure(
                err, f"{self._old} was stopped but could not be removed: {err}"
            ) from err
        self._say(f"{self._old} {'removed' if removed else 'was already removed'}")
        return self._save(record, phase="removed")

    def _create_new(self, record: dict[str, Any]) -> dict[str, Any]:
        lead = f"{self._old} was removed; new container from {self.action.to_image}"
        try:
            problem = self._target_image_problem()
            if problem:
                raise PermanentError(problem)
            new_id = self.client.create(record["name"], record["create"])
        except ActionError as err:
            raise self._failure(err, f"{lead} could not be created: {err}") from err
        if new_id is None:
            new_id = self._adopt(lead)
        self._say(f"created {record['name']} ({short_id(new_id)}) from {self.action.to_image}")
        return self._save(record, phase="created", new_id=new_id)

    def _adopt(self, lead: str) -> str:
        """Take over the container holding the name if it is of the target image."""
        existing = self.client.container(self.action.container)
        if existing is not None and existing["Image"] == self.action.to_image_id:
            self._say(
                f"found {self.action.container} ({short_id(existing['Id'])}) "
                "from an earlier attempt"
            )
            return str(existing["Id"])
        taken = f"the name {self.action.container} is in use"
        raise self._failure(PermanentError(taken), f"{lead} could not be created: {taken}")

    def _start_new(self, record: dict[str, Any]) -> dict[str, Any]:
        try:
            self.client.start(record["new_id"])
        except ActionError as err:
            cleanup = self._discard(record["new_id"])
            self._save(record, phase="removed", new_id=None)
            raise self._failure(
                err,
                f"{self._old} was removed; new container from {self.action.to_image} "
                f"failed to start: {err}{cleanup}",
            ) from err
        self._say(f"started {record['name']} ({short_id(record['new_id'])})")
        return self._save(record, phase="started")

    def _discard(self, container_id: str) -> str:
        """Remove a container that never started; say so only if that failed."""
        try:
            self.client.remove(container_id)
        except ActionError as err:
            return f"; the new container {short_id(container_id)} could not be removed: {err}"
        return ""

    def _verify(self, record: dict[str, Any]) -> None:
        self._ensure_running(record)
        if self.action.health_url:
            self._poll_health(record)

    def _ensure_running(self, record: dict[str, Any]) -> None:
        lead = (
            f"{self._old} was removed; new container {record['name']} "
            f"({short_id(record['new_id'])}) from {self.action.to_image}"
        )
        try:
            current = self.client.container(record["new_id"])
        except ActionError as err:
            raise self._failure(err, f"{lead} could not be inspected: {err}") from err
        state = (current or {}).get("State") or {}
        if state.get("Running"):
            return
        code = state.get("ExitCode", "?") if current else "? (it is gone)"
        raise self._failure(
            PermanentError("exited"),
            f"{lead} exited with code {code} after starting (see docker logs {record['name']})",
        )

    def _poll_health(self, record: dict[str, Any]) -> None:
        url, interval = str(self.action.health_url), self.action.health_interval
        backoff = Backoff(first=interval, cap=interval * 8)
        options = HttpOptions(request_timeout=HEALTH_REQUEST_TIMEOUT, backoff=backoff)
        health = poll_health(
            url,
            deadline=self.ctx.deadline,
            options=options,
            on_retry=lambda _: self._ensure_running(record),
        )
        last = f"HTTP {health.status}" if health.status is not None else health.answer
        if health.ok:
            self._say(f"health: {url} answered {last} (attempt {health.attempts})")
            return
        self._ensure_running(record)
        raise self._failure(
            PermanentError(last),
            f"{self._old} was removed; new container {record['name']} "
            f"({self.action.to_image}) is running but {url} did not answer 2xx "
            f"before the step's deadline (last: {last}, {health.attempts} attempts)",
            inspect_host=False,
        )

    def _failure(self, err: ActionError, what: str, *, inspect_host: bool = True) -> ActionError:
        """Return an error of `err`'s kind whose message ends with the host's state now."""
        message = f"{what}; {self._host_state()}" if inspect_host else what
        if isinstance(err, TemporaryError):
            return TemporaryError(message, delay=err.delay)
        return PermanentError(message)

    def _host_state(self) -> str:
        name = self.action.container
        try:
            current = self.client.container(name)
        except ActionError as err:
            return f"the host could not be inspected: {err}"
        if current is None:
            return f"no container named {name} is running"
        image, status = current["Config"]["Image"], current["State"]["Status"]
        if current["State"]["Running"]:
            return f"container {name} ({short_id(current['Id'])}) is running {image}"
        return (
            f"no container named {name} is running ({name} {short_id(current['Id'])} from "
            f"{image} is {status})"
        )

    def _result(self, *, skipped: bool) -> StepResult:
        action = self.action
        if skipped:
            summary = f"skipped: {action.container} already runs {action.to_image}"
        else:
            summary = f"{action.container} now runs {action.to_image} (was {action.from_image})"
            summary += "; healthy" if action.health_url else ""
        data = {"container": action.container, "from_image": action.from_image}
        data |= {"to_image": action.to_image, "to_image_id": action.to_image_id}
        return StepResult(summary=summary, output="\n".join(self.lines), skipped=skipped, data=data)


# -- the target ---------------------------------------------------------------------


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


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DockerTarget:
    """A container on one Docker host whose image can be swapped for an older one."""

    def __init__(self, params: DockerParams, *, clock: Callable[[], datetime] = _utcnow) -> None:
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
        label += f" · {short_id(image.id)} · {_age(image.created, now)}"
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
        age = _age(image.created, self._clock())
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
            f"{self.params.container} runs {running.ref} (built {_age(running.created, now)}); "
            f"rolling back to {target.ref} (built {_age(target.created, now)})"
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
