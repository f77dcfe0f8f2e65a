"""What a container carries over to its successor: the create request built from inspect.

The engine merges the image's Env, Labels, ExposedPorts, Cmd, Entrypoint,
Healthcheck, User, WorkingDir, StopSignal and Volumes into every container it
creates, and inspect cannot tell them apart from what the operator set. So the
old image's own values are subtracted first: copied blindly, the old image's
`APP_VERSION=1.2.4` or `PATH` would override the values baked into the image
being rolled back to. Entrypoint and Cmd go over only where the container
overrode the image's (an overridden Entrypoint takes its Cmd along, as
`docker run --entrypoint` does). A hostname equal to the container's short id
is Docker's default and is not carried (the new container gets its own).

HostConfig goes over whole, with two repairs: legacy links come back from
inspect as `/db:/web/db` and are given back as `db:db`; anonymous volumes
keep their data by being named: an image's VOLUME or `-v /data` is added to
Binds by its volume name, and a `--mount type=volume` without a source (kept
as written in HostConfig.Mounts, its Source empty) gets the name inspect's
Mounts shows for its target, so the new container re-attaches the same volume
(created afresh it would be empty). Named, the volume is no longer removed
with a container started with `--rm` (moby daemon/mounts.go
removeMountPoints skips mounts whose Spec.Source is set): it outlives the
container rather than its data being lost.

Networks: API 1.41 creates a container on one network only, so the create
request carries the primary one (HostConfig.NetworkMode) and the others are
connected before start, each with its aliases, IPAM config, links and driver
options. The aliases Docker adds by itself (the short container id, and from
API 1.45 on the container name is in DNSNames) are dropped, or the new
container would answer to the old one's id.

The bot records what each container ran in the label `HISTORY_LABEL` on the
containers it creates: the previous containers' image, id, digests and time
span, newest last; the target's rollback points read it.
"""

from __future__ import annotations

import json
from typing import Any

from actions.docker.engine import short_id

HISTORY_LABEL = "io.rollback-bot.history"
HISTORY_KEEP = 20
"""Deployments remembered in the label; older ones drop off."""

_IF_OVERRIDDEN = ("User", "WorkingDir", "Healthcheck", "StopSignal", "Volumes")
_IF_SET = ("Domainname", "StopTimeout", "Tty", "OpenStdin", "StdinOnce", "MacAddress")
_ENDPOINT_KEYS = ("IPAMConfig", "Links", "DriverOpts")
_NO_ENDPOINTS = ("host", "none")


def carried_config(container: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """Return the Config fields the operator set on `container` beyond its image's own."""
    config = container.get("Config") or {}
    baked_env = set(image.get("Env") or [])
    baked_labels = image.get("Labels") or {}
    bound = (container.get("HostConfig") or {}).get("PortBindings") or {}
    body: dict[str, Any] = {
        "Env": [e for e in config.get("Env") or [] if e not in baked_env],
        "Labels": {
            k: v
            for k, v in (config.get("Labels") or {}).items()
            if baked_labels.get(k) != v and k != HISTORY_LABEL
        },
        "ExposedPorts": {
            p: {}
            for p in config.get("ExposedPorts") or {}
            if p not in (image.get("ExposedPorts") or {})
        }
        | {p: {} for p in bound},
    }
    for key in _IF_OVERRIDDEN:
        if config.get(key) and config.get(key) != image.get(key):
            body[key] = config[key]
    for key in _IF_SET:
        if config.get(key):
            body[key] = config[key]
    if config.get("Entrypoint") != image.get("Entrypoint"):
        body["Entrypoint"] = config.get("Entrypoint") or [""]
        body["Cmd"] = config.get("Cmd")
    elif config.get("Cmd") != image.get("Cmd"):
        body["Cmd"] = config.get("Cmd")
    hostname = config.get("Hostname")
    if hostname and hostname != short_id(container["Id"]):
        body["Hostname"] = hostname
    return body


def _target(spec: str) -> str:
    """The container path of a Binds entry `source:target[:options]`."""
    parts = spec.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def carried_host_config(container: dict[str, Any]) -> dict[str, Any]:
    """Return HostConfig whole, with links given back and anonymous volumes re-attached."""
    host = dict(container.get("HostConfig") or {})
    volumes = {
        str(m.get("Destination")): str(m["Name"])
        for m in container.get("Mounts") or []
        if m.get("Type") == "volume" and m.get("Name")
    }
    if host.get("Mounts"):
        host["Mounts"] = [_named(m, volumes) for m in host["Mounts"]]
    binds = list(host.get("Binds") or [])
    covered = {_target(b) for b in binds}
    covered |= {m.get("Target") for m in host.get("Mounts") or []}
    for mount in container.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in covered:
            binds.append(
                f"{mount['Name']}:{mount['Destination']}" + ("" if mount.get("RW") else ":ro")
            )
    if binds:
        host["Binds"] = binds
    if host.get("Links"):
        host["Links"] = [_legacy_link(link) for link in host["Links"]]
    return host


def _named(mount: dict[str, Any], volumes: dict[str, str]) -> dict[str, Any]:
    """Give a `--mount type=volume` without a source the name of the volume it got."""
    if mount.get("Type") != "volume" or mount.get("Source"):
        return mount
    name = volumes.get(str(mount.get("Target")))
    return {**mount, "Source": name} if name else mount


def _legacy_link(link: str) -> str:
    """Turn inspect's `/db:/web/alias` into create's `db:alias`."""
    source, _, alias = link.partition(":")
    return f"{source.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else source.lstrip("/")


def endpoints(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return each network the container is on and the endpoint settings to give it again."""
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode in _NO_ENDPOINTS or mode.startswith("container:"):
        return {}
    automatic = {short_id(container["Id"]), container["Name"].lstrip("/")}
    found: dict[str, dict[str, Any]] = {}
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for network, settings in networks.items():
        endpoint = {k: settings[k] for k in _ENDPOINT_KEYS if settings.get(k)}
        aliases = [a for a in settings.get("Aliases") or [] if a not in automatic]
        if aliases:
            endpoint["Aliases"] = aliases
        found[network] = endpoint
    return found


def primary_network(container: dict[str, Any], networks: dict[str, Any]) -> str | None:
    """Return the network the container is created on (HostConfig.NetworkMode's)."""
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode in networks:
        return mode
    if mode == "default" and "bridge" in networks:
        return "bridge"
    return next(iter(networks), None)


def history(container: dict[str, Any], image: dict[str, Any], *, until: str) -> list[Any]:
    """Return the deployment history for the successor of `container`: its own, plus itself."""
    labels = (container.get("Config") or {}).get("Labels") or {}
    try:
        past = list(json.loads(labels.get(HISTORY_LABEL) or "[]"))
    except (ValueError, TypeError):
        past = []
    entry = {
        "image": (container.get("Config") or {}).get("Image"),
        "id": container.get("Image"),
        "digests": list(image.get("RepoDigests") or []),
        "since": container.get("Created"),
        "until": until,
    }
    return [*past, entry][-HISTORY_KEEP:]


def recreation(
    container: dict[str, Any], image: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Build the create request that makes `container` again, and the networks to connect.

    `image` is its image's inspect. Returns (create body, {network: endpoint}
    for the networks beyond the primary one).
    """
    body = carried_config(container, image.get("Config") or {})
    own = ((container.get("Config") or {}).get("Labels") or {}).get(HISTORY_LABEL)
    if own:
        body["Labels"][HISTORY_LABEL] = own
    body["Image"] = (container.get("Config") or {}).get("Image") or container.get("Image")
    body["HostConfig"] = carried_host_config(container)
    networks = endpoints(container)
    primary = primary_network(container, networks)
    if primary is not None:
        body["NetworkingConfig"] = {"EndpointsConfig": {primary: networks.pop(primary)}}
    return body, networks


def successor(
    container: dict[str, Any], image: dict[str, Any], new_image: str, *, now: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Build the create request for `container` on `new_image`, and the networks to connect.

    `image` is the old image's inspect; the new container's history gains the old one.
    """
    body, networks = recreation(container, image)
    body["Labels"][HISTORY_LABEL] = json.dumps(history(container, image, until=now))
    body["Image"] = new_image
    return body, networks


def settings_summary(body: dict[str, Any], networks: dict[str, Any]) -> str:
    """Say which settings are carried over, naming env vars but never their values."""
    host = body["HostConfig"]
    ports = ", ".join(
        f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{port}"  # noqa: S104 (said, not bound)
        for port, bindings in (host.get("PortBindings") or {}).items()
        for b in bindings or []
    )
    names = ", ".join(e.split("=", 1)[0] for e in body["Env"]) or "none"
    restart = (host.get("RestartPolicy") or {}).get("Name") or "no"
    primary = list((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    nets = ", ".join([*primary, *networks]) or host.get("NetworkMode") or "none"
    labels = len([k for k in body["Labels"] if k != HISTORY_LABEL])
    return (
        f"env {names}; ports {ports or 'none'}; {labels} labels; restart {restart}; "
        f"{len(host.get('Binds') or [])} binds/volumes; networks {nets}"
    )
