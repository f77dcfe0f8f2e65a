"""A fake Docker Engine: the Engine API's HTTP on a unix socket, for the container swap.

The production client (actions/docker.py) talks plain HTTP over the daemon's
socket, so the fake is a real HTTP server on a real unix socket and the client
runs unchanged against it. It speaks the subset a rollback needs, with the
engine's own shapes, status codes and `{"message": ...}` error bodies: 404 for
an unknown container or image, 409 when a name is taken or a running
container is removed, 304 when stopping a stopped container or starting a
started one, 500 when a published port is already allocated.

It also keeps the engine's config merge on create (the image's Env, Labels,
ExposedPorts and Cmd fill in what the request leaves out), because the client
must undo exactly that merge when it copies a container's settings; a fake
that skipped it would hide the bug where the old image's baked-in variables
override the new image's.

Every request is recorded. Tests seed images and running containers and can
make a given operation fail (`fail`) or make containers of an image exit as
soon as they start (`crash_on_start`). Paths work with or without a `/v1.xx`
prefix; a client asking for a newer API than the fake's gets the engine's 400.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ENGINE_VERSION = "24.0.7"
API_VERSION = "1.43"
MIN_API_VERSION = "1.12"
_MAX_SOCKET_PATH = 107
_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_VERSION_RE = re.compile(r"^/v(\d+\.\d+)(/.*)$")

Reply = tuple[int, Any]


class EngineError(Exception):
    """An error answer: HTTP status and Docker's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class EngineCall:
    """One recorded request; `path` has no version prefix and no query."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    api_version: str | None


@dataclass
class _Image:
    id: str
    tags: list[str]
    created: datetime
    config: dict[str, Any]


@dataclass
class _Container:
    id: str
    name: str
    image_id: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    created: datetime
    status: str = "created"
    exit_code: int = 0
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"


@dataclass
class _Fault:
    operation: str
    status: int
    message: str
    image: str | None
    remaining: int | None


@dataclass
class _Store:
    images: dict[str, _Image] = field(default_factory=dict)
    containers: dict[str, _Container] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)
    crashing: dict[str, int] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _qualified(ref: str) -> str:
    """Add `:latest` to a reference without a tag, as the engine does."""
    name = ref.rsplit("/", 1)[-1]
    return ref if ":" in name or "@" in ref else f"{ref}:latest"


def _env_key(entry: str) -> str:
    return entry.split("=", 1)[0]


def _merge_config(user: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """Fill a create request's Config from the image's, as the engine's merge does."""
    merged = dict(user)
    env = list(user.get("Env") or [])
    keys = {_env_key(e) for e in env}
    merged["Env"] = env + [e for e in image.get("Env") or [] if _env_key(e) not in keys]
    merged["Labels"] = {**(image.get("Labels") or {}), **(user.get("Labels") or {})}
    merged["ExposedPorts"] = {
        **(image.get("ExposedPorts") or {}),
        **(user.get("ExposedPorts") or {}),
    }
    if not user.get("Entrypoint"):
        merged["Entrypoint"] = image.get("Entrypoint")
        if not user.get("Cmd"):
            merged["Cmd"] = image.get("Cmd")
    for key in ("User", "WorkingDir"):
        merged[key] = user.get(key) or image.get(key) or ""
    return merged


def _default_host_config(given: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "Binds": None,
        "NetworkMode": "default",
        "PortBindings": {},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": False,
        "LogConfig": {"Type": "json-file", "Config": {}},
    }
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def _bound_ports(host_config: dict[str, Any]) -> set[tuple[str, str]]:
    """Return (host port, protocol) pairs a container publishes."""
    bound = set()
    for port, bindings in (host_config.get("PortBindings") or {}).items():
        proto = port.split("/", 1)[1] if "/" in port else "tcp"
        for binding in bindings or []:
            if binding.get("HostPort"):
                bound.add((str(binding["HostPort"]), proto))
    return bound


class FakeDockerEngine:
    """The Docker Engine API on a unix socket in `directory`, recording every request."""

    def __init__(self, directory: str | Path, *, socket_name: str = "docker.sock") -> None:
        path = Path(directory) / socket_name
        if len(str(path).encode()) > _MAX_SOCKET_PATH:
            raise ValueError(f"unix socket path is longer than {_MAX_SOCKET_PATH} bytes: {path}")
        self.socket_path = str(path)
        self.requests: list[EngineCall] = []
        self._store = _Store()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving ----------------------------------------------------------

    def start(self) -> FakeDockerEngine:
        """Bind the socket and serve in a background thread."""
        Path(self.socket_path).unlink(missing_ok=True)
        server = socketserver.ThreadingUnixStreamServer(self.socket_path, self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        Path(self.socket_path).unlink(missing_ok=True)

    def __enter__(self) -> FakeDockerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- seeding and scripting ----------------------------------------------

    def add_image(
        self,
        ref: str,
        *,
        created: datetime,
        env: list[str] | None = None,
        labels: dict[str, str] | None = None,
        exposed_ports: list[str] | None = None,
        cmd: list[str] | None = None,
    ) -> str:
        """Store an image tagged `ref` and return its id (`sha256:...`)."""
        image_id = "sha256:" + self._new_hex(ref)
        config: dict[str, Any] = {
            "Env": env or ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Labels": labels or {},
            "ExposedPorts": {port: {} for port in exposed_ports or []},
            "Cmd": cmd or ["/app/start"],
            "Entrypoint": None,
        }
        with self._lock:
            self._untag(_qualified(ref))
            self._store.images[image_id] = _Image(image_id, [_qualified(ref)], created, config)
        return image_id

    def tag(self, source: str, ref: str) -> None:
        """Add tag `ref` to the image `source` names, moving it off any other image."""
        with self._lock:
            image = self._find_image(source)
            self._untag(_qualified(ref))
            image.tags.append(_qualified(ref))

    def run_container(
        self,
        name: str,
        image: str,
        *,
        env: list[str] | None = None,
        labels: dict[str, str] | None = None,
        port_bindings: dict[str, list[dict[str, str]]] | None = None,
        restart_policy: dict[str, Any] | None = None,
        binds: list[str] | None = None,
    ) -> str:
        """Create and start a container as `docker run -d` would; return its id."""
        body: dict[str, Any] = {
            "Image": image,
            "Env": env,
            "Labels": labels,
            "ExposedPorts": {port: {} for port in port_bindings or {}},
            "HostConfig": {
                "PortBindings": port_bindings,
                "RestartPolicy": restart_policy,
                "Binds": binds,
            },
        }
        with self._lock:
            container_id = self._create(name, body)
            self._start(self._store.containers[container_id])
        return container_id

    def fail(
        self,
        operation: str,
        *,
        status: int = 500,
        message: str = "injected failure",
        image: str | None = None,
        times: int | None = None,
    ) -> None:
        """Make `operation` (ping, version, inspect, list, create, start, stop, remove,
        images, image_inspect) answer `status` with `message`, only for containers or
        create requests of `image` when given, `times` times (None: always)."""
        with self._lock:
            self._store.faults.append(_Fault(operation, status, message, image, times))

    def crash_on_start(self, image: str, *, exit_code: int = 1) -> None:
        """Let containers of `image` start and then exit at once with `exit_code`."""
        with self._lock:
            self._store.crashing[_qualified(image)] = exit_code

    # -- looking --------------------------------------------------------------

    def inspect(self, name_or_id: str) -> dict[str, Any] | None:
        """Return the engine's inspect JSON for a container, or None."""
        with self._lock:
            try:
                return self._inspect_json(self._find_container(name_or_id))
            except EngineError:
                return None

    def container_names(self) -> list[str]:
        """Names of all containers, running or not."""
        with self._lock:
            return sorted(c.name for c in self._store.containers.values())

    def calls(self, method: str | None = None, path: str | None = None) -> list[EngineCall]:
        """Recorded requests, filtered by method and by a path glob (e.g. `/containers/*/stop`)."""
        with self._lock:
            return [
                c
                for c in self.requests
                if (method is None or c.method == method.upper())
                and (path is None or fnmatch.fnmatchcase(c.path, path))
            ]

    # -- request handling -----------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
        """Answer one HTTP request: its status and JSON value (text for ping, None when empty)."""
        url = urlsplit(raw_path)
        path, version = unquote(url.path), None
        match = _VERSION_RE.match(path)
        if match:
            version, path = match.group(1), match.group(2)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        payload = json.loads(body) if body else None
        with self._lock:
            self.requests.append(EngineCall(method, path, query, payload, version))
            try:
                self._check_version(version)
                return self._dispatch(method, path, query, payload)
            except EngineError as err:
                return err.status, {"message": err.message}

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        for route_method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return handler(query, body, *match.groups())
        raise EngineError(404, "page not found")

    def _routes(self) -> list[tuple[str, str, Callable[..., Reply]]]:
        return [
            ("GET", r"/_ping", self._ping),
            ("GET", r"/version", self._version),
            ("GET", r"/containers/json", self._list_containers),
            ("POST", r"/containers/create", self._create_route),
            ("GET", r"/containers/([^/]+)/json", self._inspect_route),
            ("POST", r"/containers/([^/]+)/stop", self._stop_route),
            ("POST", r"/containers/([^/]+)/start", self._start_route),
            ("DELETE", r"/containers/([^/]+)", self._remove_route),
            ("GET", r"/images/json", self._list_images),
            ("GET", r"/images/(.+)/json", self._image_route),
        ]

    def _check_version(self, version: str | None) -> None:
        if version is None:
            return
        asked = tuple(int(p) for p in version.split("."))
        if asked > tuple(int(p) for p in API_VERSION.split(".")):
            raise EngineError(
                400,
                f"client version {version} is too new. "
                f"Maximum supported API version is {API_VERSION}",
            )
        if asked < tuple(int(p) for p in MIN_API_VERSION.split(".")):
            raise EngineError(
                400,
                f"client version {version} is too old. Minimum supported API version is "
                f"{MIN_API_VERSION}, please upgrade your client to a newer version",
            )

    def _fault(self, operation: str, image: str | None = None) -> None:
        for fault in self._store.faults:
            if fault.operation != operation or fault.remaining == 0:
                continue
            if fault.image is not None and (
                image is None or not self._same_image(fault.image, image)
            ):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            raise EngineError(fault.status, fault.message)

    def _same_image(self, wanted: str, ref: str) -> bool:
        if _qualified(wanted) == _qualified(ref) or wanted == ref:
            return True
        try:
            return self._find_image(wanted).id == self._find_image(ref).id
        except EngineError:
            return False

    # -- routes ---------------------------------------------------------------

    def _ping(self, query: dict[str, str], body: Any) -> Reply:
        self._fault("ping")
        return 200, "OK"

    def _version(self, query: dict[str, str], body: Any) -> Reply:
        self._fault("version")
        return 200, {
            "Version": ENGINE_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": "6.1.0",
            "Components": [{"Name": "Engine", "Version": ENGINE_VERSION}],
        }

    def _list_containers(self, query: dict[str, str], body: Any) -> Reply:
        self._fault("list")
        show_all = query.get("all", "") in ("1", "true", "True")
        chosen = [c for c in self._store.containers.values() if show_all or c.status == "running"]
        return 200, [self._summary_json(c) for c in sorted(chosen, key=lambda c: c.created)]

    def _create_route(self, query: dict[str, str], body: Any) -> Reply:
        body = body or {}
        self._fault("create", body.get("Image"))
        return 201, {"Id": self._create(query.get("name", ""), body), "Warnings": []}

    def _inspect_route(self, query: dict[str, str], body: Any, ident: str) -> Reply:
        container = self._find_container(ident)
        self._fault("inspect", container.config["Image"])
        return 200, self._inspect_json(container)

    def _stop_route(self, query: dict[str, str], body: Any, ident: str) -> Reply:
        container = self._find_container(ident)
        self._fault("stop", container.config["Image"])
        if container.status != "running":
            return 304, None
        container.status, container.exit_code = "exited", 0
        container.finished_at = _rfc3339(_now())
        return 204, None

    def _start_route(self, query: dict[str, str], body: Any, ident: str) -> Reply:
        container = self._find_container(ident)
        self._fault("start", container.config["Image"])
        if container.status == "running":
            return 304, None
        self._start(container)
        return 204, None

    def _remove_route(self, query: dict[str, str], body: Any, ident: str) -> Reply:
        container = self._find_container(ident)
        self._fault("remove", container.config["Image"])
        force = query.get("force", "") in ("1", "true", "True")
        if container.status == "running" and not force:
            raise EngineError(
                409,
                f"You cannot remove a running container {container.id}. Stop the container "
                "before attempting removal or force remove",
            )
        del self._store.containers[container.id]
        return 204, None

    def _list_images(self, query: dict[str, str], body: Any) -> Reply:
        self._fault("images")
        patterns = json.loads(query.get("filters") or "{}").get("reference") or []
        images = [i for i in self._store.images.values() if self._matches(i, patterns)]
        images.sort(key=lambda i: i.created, reverse=True)
        return 200, [self._image_summary(i) for i in images]

    def _image_route(self, query: dict[str, str], body: Any, name: str) -> Reply:
        self._fault("image_inspect", name)
        image = self._find_image(name)
        return 200, {
            "Id": image.id,
            "RepoTags": list(image.tags),
            "RepoDigests": [],
            "Created": _rfc3339(image.created),
            "Config": image.config,
            "Architecture": "amd64",
            "Os": "linux",
            "Size": 52_428_800,
        }

    # -- engine behaviour -----------------------------------------------------

    def _create(self, name: str, body: dict[str, Any]) -> str:
        if name and not _NAME_RE.match(name):
            raise EngineError(
                400, f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        image = self._find_image(body.get("Image") or "")
        name = name.lstrip("/") or f"fake_{next(self._ids)}"
        taken = next((c for c in self._store.containers.values() if c.name == name), None)
        if taken is not None:
            raise EngineError(
                409,
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{taken.id}". You have to remove (or rename) that container to be able to '
                "reuse that name.",
            )
        user = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        config = _merge_config(user, image.config)
        config["Image"] = body["Image"]
        container_id = self._new_hex(name)
        config["Hostname"] = container_id[:12]
        host_config = _default_host_config(body.get("HostConfig") or {})
        self._store.containers[container_id] = _Container(
            container_id, name, image.id, config, host_config, _now()
        )
        return container_id

    def _start(self, container: _Container) -> None:
        wanted = _bound_ports(container.host_config)
        for other in self._store.containers.values():
            if other is container or other.status != "running":
                continue
            clash = wanted & _bound_ports(other.host_config)
            if clash:
                port = sorted(clash)[0][0]
                raise EngineError(
                    500,
                    f"driver failed programming external connectivity on endpoint "
                    f"{container.name} ({container.id}): Bind for 0.0.0.0:{port} failed: "
                    "port is already allocated",
                )
        container.started_at = _rfc3339(_now())
        exit_code = self._crash_code(container)
        if exit_code is None:
            container.status = "running"
            return
        container.status, container.exit_code = "exited", exit_code
        container.finished_at = container.started_at

    def _crash_code(self, container: _Container) -> int | None:
        for image, code in self._store.crashing.items():
            if self._same_image(image, container.config["Image"]):
                return code
        return None

    def _find_container(self, ident: str) -> _Container:
        ident = ident.lstrip("/")
        containers = self._store.containers
        if ident in containers:
            return containers[ident]
        for container in containers.values():
            if container.name == ident:
                return container
        prefixed = [c for c in containers.values() if ident and c.id.startswith(ident)]
        if len(prefixed) == 1:
            return prefixed[0]
        raise EngineError(404, f"No such container: {ident}")

    def _find_image(self, ref: str) -> _Image:
        images = self._store.images
        if ref in images:
            return images[ref]
        for image in images.values():
            if _qualified(ref) in image.tags:
                return image
        bare = ref.removeprefix("sha256:")
        prefixed = [i for i in images.values() if len(bare) >= 4 and i.id[7:].startswith(bare)]
        if len(prefixed) == 1:
            return prefixed[0]
        raise EngineError(404, f"No such image: {ref}")

    def _untag(self, ref: str) -> None:
        for image in self._store.images.values():
            if ref in image.tags:
                image.tags.remove(ref)

    def _matches(self, image: _Image, patterns: list[str]) -> bool:
        if not patterns:
            return bool(image.tags)
        for tag in image.tags:
            repo = tag.rsplit(":", 1)[0]
            if any(fnmatch.fnmatchcase(repo, p) or fnmatch.fnmatchcase(tag, p) for p in patterns):
                return True
        return False

    def _new_hex(self, seed: str) -> str:
        return hashlib.sha256(f"{seed}#{next(self._ids)}".encode()).hexdigest()

    # -- JSON shapes ------------------------------------------------------------

    def _inspect_json(self, c: _Container) -> dict[str, Any]:
        running = c.status == "running"
        return {
            "Id": c.id,
            "Created": _rfc3339(c.created),
            "Path": (c.config.get("Cmd") or [""])[0],
            "Args": (c.config.get("Cmd") or [])[1:],
            "State": {
                "Status": c.status,
                "Running": running,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "Dead": False,
                "Pid": 4242 if running else 0,
                "ExitCode": c.exit_code,
                "Error": "",
                "StartedAt": c.started_at,
                "FinishedAt": c.finished_at,
            },
            "Image": c.image_id,
            "Name": f"/{c.name}",
            "RestartCount": 0,
            "HostConfig": c.host_config,
            "Config": c.config,
            "NetworkSettings": {"Ports": self._published(c) if running else {}},
        }

    def _published(self, c: _Container) -> dict[str, Any]:
        ports: dict[str, Any] = {port: None for port in c.config.get("ExposedPorts") or {}}
        for port, bindings in (c.host_config.get("PortBindings") or {}).items():
            ports[port] = [
                {"HostIp": b.get("HostIp") or "0.0.0.0", "HostPort": str(b.get("HostPort", ""))}
                for b in bindings or []
            ]
        return ports

    def _summary_json(self, c: _Container) -> dict[str, Any]:
        status = {"running": "Up 1 second", "created": "Created"}.get(
            c.status, f"Exited ({c.exit_code}) 1 second ago"
        )
        ports = (
            [
                {
                    "IP": "0.0.0.0",
                    "PrivatePort": int(p.split("/")[0]),
                    "PublicPort": int(host),
                    "Type": proto,
                }
                for (host, proto), p in self._port_pairs(c)
            ]
            if c.status == "running"
            else []
        )
        return {
            "Id": c.id,
            "Names": [f"/{c.name}"],
            "Image": c.config["Image"],
            "ImageID": c.image_id,
            "Command": " ".join(c.config.get("Cmd") or []),
            "Created": int(c.created.timestamp()),
            "Ports": ports,
            "Labels": c.config.get("Labels") or {},
            "State": c.status,
            "Status": status,
            "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode", "default")},
        }

    def _port_pairs(self, c: _Container) -> list[tuple[tuple[str, str], str]]:
        pairs = []
        for port, bindings in (c.host_config.get("PortBindings") or {}).items():
            proto = port.split("/", 1)[1] if "/" in port else "tcp"
            pairs += [
                ((str(b["HostPort"]), proto), port) for b in bindings or [] if b.get("HostPort")
            ]
        return pairs

    def _image_summary(self, image: _Image) -> dict[str, Any]:
        return {
            "Id": image.id,
            "ParentId": "",
            "RepoTags": list(image.tags),
            "RepoDigests": [],
            "Created": int(image.created.timestamp()),
            "Size": 52_428_800,
            "SharedSize": -1,
            "Labels": image.config.get("Labels") or {},
            "Containers": -1,
        }

    # -- HTTP -------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"Docker/{ENGINE_VERSION} (linux)"
            sys_version = ""

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, value = engine.handle(self.command, self.path, body)
                self.send_response(status)
                self.send_header("Api-Version", API_VERSION)
                if status in (204, 304):
                    self.end_headers()
                    return
                is_text = isinstance(value, str)
                data = value.encode() if is_text else (json.dumps(value) + "\n").encode()
                self.send_header(
                    "Content-Type", "text/plain; charset=utf-8" if is_text else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                if self.path.endswith("/_ping"):
                    self.send_header("OSType", "linux")
                    self.send_header("Docker-Experimental", "false")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def address_string(self) -> str:
                return "unix"

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
