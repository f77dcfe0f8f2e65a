"""The container swap: swap by rename, switch back on failure, resumable after a crash.

The procedures' script is `docker stop`, `docker rm`, `docker run` of the
previous tag; removing the old container first leaves nothing to switch back
to. So the old container is stopped, its restart policy set to `no` (a
daemon restart must not bring it back beside its successor) and renamed
`<name>-rollback-<time>`; the new one is created under the original name with
every setting carried over (`actions.docker.settings`), connected to the other
networks, started and watched until healthy (`actions.docker.health`). Any
failure after the old container was stopped switches back: the new container
is removed, the old one gets its name and restart policy back and is started,
and the message says what failed in the engine's words and what the host runs
now. After success the renamed old containers beyond the newest `keep_retired`
are removed (never their volumes: the new container uses them). A compose
service's old container is never kept: it carries the service's labels, and
`docker compose up` counts every container so labelled as a replica, stopped
or not, removes the surplus and starts the rest (docker/compose
pkg/compose/convergence.go, ensureService), so a kept old container could be
the one started again, on the version rolled away from.

A container started with `--rm` (HostConfig.AutoRemove) is removed by the
engine as soon as it stops, with its anonymous volumes (moby daemon/monitor.go:
on exit, AutoRemove calls ContainerRm with RemoveVolume; daemon/mounts.go
removeMountPoints removes each unnamed volume unless another container still
holds it). Stopped first, it would leave nothing to switch back to, and its
volumes would be gone before the new container could take them. Two ways were
weighed: run the new container beside the old until it is healthy (not
possible in general: both want the same published ports and name), or keep
everything needed to make the old one again. So for such a container the
order changes: the running old container is renamed, the new one is created
under the name (holding the volumes by name, so the engine keeps them when
the old one goes) and connected, and only then is the old one stopped (and
removed by the engine) and the new one started. Switching back recreates the
old container from the create request recorded from its inspect before
anything changed, with the same image by id, settings, volumes and networks,
and starts it. What is lost is the old container's writable layer, which
`--rm` discards at every stop anyway. The plan says all this before approval,
and the summary never says the old container was kept.

Resuming. Every engine call that changes something is followed by a write of
the record in `ctx.memory` (the phase reached, the old container's id, the
retired name, the create request, the new container's id), and each phase
checks the live system before acting, so a crash between any two engine calls
is finished by running the step again: stop and start are no-ops when done, a
rename is skipped when the container already has the name, a create whose
name is taken adopts the container holding it (never the old one), a network
already joined is not joined again, a switch-back resumes where it stopped.
The old container is always addressed by id, never by name.

Pull. An image missing on the host is pulled before anything changes, from
the registry its reference names, with credentials from `DOCKER_AUTH_CONFIG`
or the Docker config file (`actions.docker.auth`); the engine's progress goes
to the step output.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from actions.base import ActionError, PermanentError, Step, StepContext, StepResult, fixed, given
from actions.docker.auth import registry_auth
from actions.docker.engine import DockerClient, EngineUnreachable, short_id
from actions.docker.health import POLL, Settling, state_problem
from actions.docker.params import SWITCH_BACK_RESERVE
from actions.docker.settings import recreation, settings_summary, successor


def memory_key(container: str) -> str:
    """Return the `ctx.memory` key under which the swap of `container` keeps its record."""
    return f"docker.swap/{container}"


class _SwitchBack(Exception):
    """The new container failed: switch back, saying why."""


_AFTER = {
    "stop": "stopped",
    "retire": "renamed",
    "create": "created",
    "connect": "connected",
    "start": "started",
}
"""The phase a forward step leaves in the record."""
_ORDER = ("stop", "retire", "create", "connect", "start")
_ORDER_AUTO_REMOVE = ("retire", "create", "connect", "stop", "start")
"""With `--rm`, the new container holds the volumes before the old one stops and goes."""


class SwapContainer(Step):
    """Replace a container with one of another image, keeping its name and settings.

    The spec keeps the plan's own facts; the connection and the timings are the
    target's params, given again on rebuild.
    """

    name: str = fixed("docker.swap_container")
    idempotent: bool = fixed(True)
    timeout: float = given(default=240.0)
    socket: str = given(default="/var/run/docker.sock")
    api_version: str | None = given(default=None)
    stop_timeout: int = given(default=10)
    health_url: str | None = given(default=None)
    settle: float = given(default=10.0)
    health_timeout: float = given(default=120.0)
    keep_retired: int = given(default=1)
    container: str
    from_image: str
    from_image_id: str
    to_image: str
    to_image_id: str = ""
    """Empty when the image was not on the host at planning time (it is pulled)."""
    auto_remove: bool = False
    """The old container runs with `--rm`: the engine removes it when it stops."""
    compose_service: str = ""
    """`project/service` when compose manages the container: no old container is kept."""

    def describe(self) -> str:
        """Name the container, the image it runs and the image it will run."""
        to_id = f" ({short_id(self.to_image_id)})" if self.to_image_id else " (pulled first)"
        text = (
            f"Swap container {self.container} from {self.from_image} "
            f"({short_id(self.from_image_id)}) to {self.to_image}{to_id}: "
        )
        if self.auto_remove:
            text += (
                f"it runs with --rm, so the engine removes it when it stops: rename it "
                f"{self.container}-rollback-<time>, create {self.to_image} as {self.container} "
                f"with all its settings, networks and volumes (held by the new container, so "
                f"they outlive the old), then stop the old one (up to {self.stop_timeout}s), "
                f"start the new one"
            )
        else:
            text += (
                f"stop it (up to {self.stop_timeout}s) and rename it "
                f"{self.container}-rollback-<time>, create and start {self.to_image} as "
                f"{self.container} with all its settings, networks and volumes"
            )
        text += f", and require it to stay running for {self.settle:g}s"
        text += ", its Docker healthcheck (if any) to pass"
        if self.health_url:
            text += f" and {self.health_url} to answer 2xx"
        if self.auto_remove:
            return text + (
                "; on failure recreate the old container from its recorded settings and start "
                "it (its writable layer is gone, as at any stop of a --rm container)"
            )
        text += "; on failure switch back to the old container"
        if self.compose_service:
            text += (
                f"; after success remove the old container (compose service "
                f"{self.compose_service}: `docker compose up` would count a kept one as a "
                "replica and might start it)"
            )
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

    # -- the record -------------------------------------------------------------------------

    def run(self) -> StepResult:
        record = self.ctx.memory.get(memory_key(self.action.container))
        if record is None:
            current = self._current_for_fresh_start()
            if current is None:
                return self._result(skipped=True, record=None)
            record = self._record(current)
        phase = record["phase"]
        if phase == "done":
            return self._result(skipped=True, record=record)
        if phase == "reverted":
            raise PermanentError(f"{record['outcome']} (reported by an earlier attempt)")
        if phase != "reverting":
            try:
                record = self._forward(record)
            except _SwitchBack as failure:
                record = self._save(record, phase="reverting", reason=str(failure))
        if record["phase"] == "reverting":
            self._switch_back(record)
        record = self._finish(record)
        return self._result(skipped=False, record=record)

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
        target = self.client.image(action.to_image)
        if target is not None and current["Image"] == target["Id"] and current["State"]["Running"]:
            return None
        if current["Image"] != action.from_image_id:
            raise PermanentError(
                f"container {action.container} now runs {current['Config']['Image']} "
                f"({short_id(current['Image'])}), not {action.from_image} "
                f"({short_id(action.from_image_id)}) as planned; nothing was changed"
            )
        return current

    def _record(self, current: dict[str, Any]) -> dict[str, Any]:
        image_id = self._ensure_image()
        old_image = self.client.image(current["Image"]) or {}
        now = datetime.now(UTC)
        body, networks = successor(
            current, old_image, self.action.to_image, now=now.isoformat(timespec="seconds")
        )
        name = current["Name"].lstrip("/")
        fields: dict[str, Any] = {
            "old_id": current["Id"],
            "name": name,
            "retired": f"{name}-rollback-{now.strftime('%Y%m%dT%H%M%SZ')}",
            "restart": body["HostConfig"].get("RestartPolicy") or {"Name": "no"},
            "image_id": image_id,
            "create": body,
            "networks": networks,
        }
        if body["HostConfig"].get("AutoRemove"):
            old_body, old_networks = recreation(current, old_image)
            fields |= {"autoremove": True, "old_create": old_body, "old_networks": old_networks}
        record = self._save(fields, phase="recorded")
        self._say(f"recorded {name} ({self.action.from_image}): {settings_summary(body, networks)}")
        return record

    def _ensure_image(self) -> str:
        """Return the target image's id, pulling it first when the host lacks it."""
        action = self.action
        image = self.client.image(action.to_image)
        if image is None:
            self._say(f"{action.to_image} is not on the host; pulling it")
            auth, source = registry_auth(action.to_image)
            self._say(f"registry credentials: {source}")
            try:
                self.client.pull(action.to_image, auth=auth, on_progress=self._progress)
            except ActionError as err:
                raise PermanentError(f"{err}; nothing was changed") from err
            image = self.client.image(action.to_image)
            if image is None:
                raise PermanentError(
                    f"the pull of {action.to_image} finished but the image is not on the host; "
                    "nothing was changed"
                )
        if action.to_image_id and image["Id"] != action.to_image_id:
            raise PermanentError(
                f"{action.to_image} now points at image {short_id(image['Id'])}, not "
                f"{short_id(action.to_image_id)} as planned; nothing was changed"
            )
        return str(image["Id"])

    def _progress(self, line: str) -> None:
        """Pass on the pull's lines, but not every byte-count update."""
        if "Downloading" in line or "Extracting" in line or "Waiting" in line:
            return
        self._say(f"pull: {line}")

    # -- forward ----------------------------------------------------------------------------

    def _forward(self, record: dict[str, Any]) -> dict[str, Any]:
        order = _ORDER_AUTO_REMOVE if record.get("autoremove") else _ORDER
        steps = {
            "stop": self._stop_old,
            "retire": self._retire_old,
            "create": self._create_new,
            "connect": self._connect_new,
            "start": self._start_new,
        }
        if record["phase"] == "recorded" and order[0] == "stop":
            record = self._stop_old(record)  # nothing else changed yet: no switching back
        phases = ["recorded", *(_AFTER[step] for step in order)]
        position = phases.index(record["phase"]) if record["phase"] in phases else len(order)
        try:
            for step in order[position:]:
                record = steps[step](record)
            if record["phase"] == "started":
                Settling(self.action, self.client, self.ctx.deadline, self._say).verify(record)
                healthy_at = datetime.now(UTC).isoformat(timespec="seconds")
                record = self._save(record, phase="verified", healthy_at=healthy_at)
        except EngineUnreachable:
            raise
        except ActionError as err:
            raise _SwitchBack(str(err)) from err
        return record

    def _stop_old(self, record: dict[str, Any]) -> dict[str, Any]:
        old = f"old container {record['name']} ({short_id(record['old_id'])})"
        try:
            outcome = self.client.stop(record["old_id"], timeout=self.action.stop_timeout)
        except EngineUnreachable:
            raise
        except ActionError as err:
            raise PermanentError(
                f"{old} could not be stopped: {err}; {self._host_state(record)}"
            ) from err
        if record.get("autoremove"):
            outcome += " (it runs with --rm: the engine removes it)"
        self._say(f"{old} {outcome}")
        return self._save(record, phase="stopped")

    def _retire_old(self, record: dict[str, Any]) -> dict[str, Any]:
        old_id, retired = record["old_id"], record["retired"]
        if record["restart"].get("Name") not in (None, "", "no"):
            self.client.update_restart_policy(old_id, {"Name": "no"})
        current = self.client.container(old_id)
        if current is None:
            raise PermanentError(f"the old container {short_id(old_id)} is gone")
        if current["Name"].lstrip("/") != retired:
            self.client.rename(old_id, retired)
        self._say(f"old container renamed {retired} (restart policy no while retired)")
        return self._save(record, phase="renamed")

    def _create_new(self, record: dict[str, Any]) -> dict[str, Any]:
        new_id = self.client.create(record["name"], record["create"])
        if new_id is None:
            new_id = self._adopt(record)
        self._say(f"created {record['name']} ({short_id(new_id)}) from {self.action.to_image}")
        return self._save(record, phase="created", new_id=new_id)

    def _adopt(self, record: dict[str, Any]) -> str:
        """Take over the container holding the name if an earlier attempt created it."""
        existing = self.client.container(record["name"])
        if (
            existing is not None
            and existing["Id"] != record["old_id"]
            and existing["Image"] == record["image_id"]
        ):
            self._say(
                f"found {record['name']} ({short_id(existing['Id'])}) from an earlier attempt"
            )
            return str(existing["Id"])
        raise PermanentError(f"the name {record['name']} is taken by another container")

    def _connect_new(self, record: dict[str, Any]) -> dict[str, Any]:
        current = self.client.container(record["new_id"]) or {}
        joined = (current.get("NetworkSettings") or {}).get("Networks") or {}
        for network, endpoint in record["networks"].items():
            if network not in joined:
                self.client.connect(network, record["new_id"], endpoint)
                self._say(f"connected {record['name']} to network {network}")
        return self._save(record, phase="connected")

    def _start_new(self, record: dict[str, Any]) -> dict[str, Any]:
        self.client.start(record["new_id"])
        self._say(f"started {record['name']} ({short_id(record['new_id'])})")
        return self._save(record, phase="started")

    # -- switching back ---------------------------------------------------------------------

    def _switch_back(self, record: dict[str, Any]) -> None:
        """Remove the new container, give the old one its name back and start it; then raise."""
        name, old_id = record["name"], record["old_id"]
        reason = record["reason"]
        self._say(f"switching back: {reason}")
        try:
            self._remove_new(record)
            current = self.client.container(old_id)
            if current is not None and current["State"].get("Status") == "removing":
                self._wait_gone(old_id)  # stopped with --rm: the engine is removing it
                current = None
            if current is None and record.get("autoremove"):
                record = self._recreate_old(record)
            elif current is None:
                raise PermanentError(f"the old container {short_id(old_id)} is gone")
            else:
                if current["Name"].lstrip("/") != name:
                    self.client.rename(old_id, name)
                if record["restart"].get("Name") not in (None, "", "no"):
                    self.client.update_restart_policy(old_id, record["restart"])
                self.client.start(old_id)
        except EngineUnreachable:
            raise
        except ActionError as err:
            outcome = (
                f"{name} from {self.action.to_image} failed: {reason}; switching back to "
                f"{self.action.from_image} failed too: {err}; {self._host_state(record)}"
            )
            raise PermanentError(outcome) from err
        outcome = (
            f"{name} from {self.action.to_image} failed: {reason}; switched back: "
            f"{self._host_state(record)}"
        )
        self._save(record, phase="reverted", outcome=outcome)
        self._say(outcome)
        raise PermanentError(outcome)

    def _recreate_old(self, record: dict[str, Any]) -> dict[str, Any]:
        """Make the old container again from its recorded create request, and start it."""
        name, recreated = record["name"], record.get("recreated_id")
        if recreated is None:
            body = dict(record["old_create"])
            image = self.client.image(str(body["Image"]))
            if image is None or image["Id"] != self.action.from_image_id:
                body["Image"] = self.action.from_image_id  # the tag moved: the exact image
            recreated = self.client.create(name, body)
            if recreated is None:
                holder = self.client.container(name)
                if holder is None or holder["Image"] != self.action.from_image_id:
                    raise PermanentError(f"the name {name} is taken by another container")
                recreated = str(holder["Id"])
            record = self._save(record, recreated_id=recreated)
            self._say(
                f"the engine removed the old container when it stopped (--rm): recreated "
                f"{name} ({short_id(recreated)}) from {self.action.from_image} with its "
                "recorded settings"
            )
        joined = ((self.client.container(recreated) or {}).get("NetworkSettings") or {}).get(
            "Networks"
        ) or {}
        for network, endpoint in record["old_networks"].items():
            if network not in joined:
                self.client.connect(network, recreated, endpoint)
        self.client.start(recreated)
        return record

    def _remove_new(self, record: dict[str, Any]) -> None:
        new_id = record.get("new_id")
        if new_id is None:
            holder = self.client.container(record["name"])
            if holder is not None and holder["Image"] == record["image_id"]:
                new_id = holder["Id"]  # created by an attempt that died before saving its id
        if new_id is None:
            return
        try:
            if self.client.remove(new_id, force=True):
                self._say(f"removed the new container {short_id(new_id)}")
        except PermanentError as err:
            # The engine is removing it itself (--rm): moby daemon/delete.go answers 409
            # "removal of container ... is already in progress".
            if "already in progress" not in str(err):
                raise
        self._wait_gone(new_id)

    def _wait_gone(self, container_id: str) -> None:
        """Wait while the engine removes a container (--rm): it holds its name until done."""
        deadline = min(self.ctx.deadline, time.monotonic() + SWITCH_BACK_RESERVE)
        while self.client.container(container_id) is not None:
            if time.monotonic() > deadline:
                raise PermanentError(f"container {short_id(container_id)} is still being removed")
            time.sleep(POLL)

    def _host_state(self, record: dict[str, Any]) -> str:
        """Say what the host runs now under the container's name and the retired name."""
        name = record["name"]
        try:
            current = self.client.container(name)
            old = self.client.container(record["old_id"])
        except ActionError as err:
            return f"the host could not be inspected: {err}"
        if current is None:
            text = f"no container named {name} exists"
        else:
            problem = state_problem(current, restarts=None)
            image = current["Config"]["Image"]
            text = f"{name} ({short_id(current['Id'])}) " + (
                f"from {image} {problem}" if problem else f"is running {image}"
            )
        if old is not None and old["Name"].lstrip("/") != name:
            text += f"; the old container is {old['Name'].lstrip('/')} ({old['State']['Status']})"
        return text

    # -- success ----------------------------------------------------------------------------

    def _finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Remove retired containers beyond the newest `keep_retired`; mark the swap done."""
        name = record["name"]
        keep = 0 if self.action.compose_service else self.action.keep_retired
        retired = self.client.containers(name=f"^/{re.escape(name)}-rollback-")
        retired.sort(key=lambda c: c["Names"][0], reverse=True)
        for old in retired[keep:]:
            try:
                self.client.remove(old["Id"])
                self._say(f"removed the retired container {old['Names'][0].lstrip('/')}")
            except ActionError as err:
                self._say(f"could not remove {old['Names'][0].lstrip('/')}: {err}")
        return self._save(record, phase="done")

    def _result(self, *, skipped: bool, record: dict[str, Any] | None) -> StepResult:
        action = self.action
        if skipped:
            summary = f"already done: {action.container} runs {action.to_image}"
        else:
            summary = f"{action.container} now runs {action.to_image} (was {action.from_image})"
            if record is not None and record.get("autoremove"):
                summary += (
                    "; the old container ran with --rm: the engine removed it when it stopped"
                )
            elif record is not None and action.compose_service:
                summary += (
                    f"; the old container was removed (compose service {action.compose_service} "
                    "would count it as a replica)"
                )
            elif record is not None and action.keep_retired:
                summary += f"; the old container is kept as {record['retired']}"
        data: dict[str, Any] = {"container": action.container, "from_image": action.from_image}
        data |= {"to_image": action.to_image, "to_image_id": (record or {}).get("image_id", "")}
        data |= {"healthy_at": (record or {}).get("healthy_at")}
        return StepResult(summary=summary, output="\n".join(self.lines), skipped=skipped, data=data)
