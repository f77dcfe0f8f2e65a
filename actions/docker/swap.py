"""The container swap: stop and remove the old container, create and start the new one.

The procedures' script is `docker stop`, `docker rm`, `docker run` of the
previous tag, then a health check; here each step is an Engine API call.

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
Health is polled with `actions.http.poll_health`, checking between attempts
that the new container still runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actions.base import ActionError, PermanentError, StepContext, StepResult, TemporaryError
from actions.docker.engine import DockerClient, short_id
from actions.http.health import HEALTH_REQUEST_TIMEOUT, poll_health
from actions.http.request import Backoff, HttpOptions

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
