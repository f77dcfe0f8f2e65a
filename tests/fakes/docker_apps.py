"""Containers and images of the test app (rbt-app) on the session's private dockerd, and a
crash between engine calls: what the Docker tests share."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from actions.base import StepContext, StepResult
from actions.docker import DockerClient, DockerParams, DockerTarget
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry


APP = "rbt-app"
"""The test images' repository (tests/fakes/dockerd.py builds v1, v2, v3 and crash)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SECRET = "DATABASE_URL=postgres://app:s3cret@db/app"


def unique(prefix: str = "rbt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def params(engine: Engine, name: str, **changes: Any) -> DockerParams:
    values: dict[str, Any] = {
        "kind": "docker",
        "container": name,
        "image": APP,
        "socket": engine.socket,
        "settle": 1.0,
        "health_timeout": 20.0,
        "stop_timeout": 0,
        "keep_retired": 0,
    }
    return DockerParams(**(values | changes))


def app(
    engine: Engine,
    version: str = "v2",
    *,
    port: int | None = None,
    restart: str = "no",
    networks: dict[str, Any] | None = None,
    image_repo: str = APP,
    **config: Any,
) -> tuple[str, int]:
    """Run a container of `rbt-app:<version>` publishing 8080 on 127.0.0.1; (name, port)."""
    name, port = unique(), port or free_port()
    host = {
        "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
        "RestartPolicy": {"Name": restart},
        **config.pop("HostConfig", {}),
    }
    body = {"Image": f"{image_repo}:{version}", "Env": [SECRET], "HostConfig": host, **config}
    engine.run(name, body, networks=networks or {engine.network(): {}})
    return name, port


def swap(
    engine: Engine,
    name: str,
    ref: str | None,
    memory: dict[str, Any] | None = None,
    **changes: Any,
) -> StepResult:
    target = DockerTarget(params(engine, name, **changes))
    step = target.plan(ref).rollback[0]
    ctx = StepContext.for_test(timeout=90, memory=memory if memory is not None else {})
    return step.run(ctx)


def version_served(port: int) -> str:
    """What the container publishing `port` serves (a container just started may not listen yet)."""

    def fetch() -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.strip()
        except httpx.TransportError:
            return None

    return wait_for(fetch, timeout=10, what=f"an answer on 127.0.0.1:{port}")


def containers_named(engine: Engine, prefix: str) -> list[str]:
    listed = engine.call("GET", "/containers/json", params={"all": "1"}).json()
    return sorted(n.lstrip("/") for c in listed for n in c["Names"] if n.startswith(f"/{prefix}"))


BUSYBOX = Path("/bin/busybox")


def build(engine: Engine, registry: Registry, version: str) -> None:
    """Build `<registry>/rbt-app:<version>` (an image of its own: the session's stay untouched)."""
    engine.build(
        f"{registry.address}/{APP}:{version}",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY health /www/health\n"
        f"COPY version /www/version\nENV APP_VERSION={version} REGISTRY=1\nEXPOSE 8080\n"
        'ENTRYPOINT ["/bin/busybox"]\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
        {"busybox": BUSYBOX, "health": b"ok\n", "version": f"{version}\n".encode()},
    )


def push(engine: Engine, registry: Registry, version: str) -> str:
    """Build `<registry>/rbt-app:<version>`, push it, remove it locally; return its digest ref."""
    repo = f"{registry.address}/{APP}"
    build(engine, registry, version)
    anonymous = base64.urlsafe_b64encode(b"{}").decode()
    pushed = engine.call(
        "POST",
        f"/images/{repo}/push",
        params={"tag": version},
        headers={"X-Registry-Auth": anonymous},
        timeout=60,
    )
    assert '"error"' not in pushed.text, pushed.text
    digest = engine.call("GET", f"/images/{repo}:{version}/json").json()["RepoDigests"][0]
    engine.call("DELETE", f"/images/{repo}:{version}", params={"force": "1"})
    return str(digest)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry) -> Path:
    """A Docker config file with credentials for the local registry (which ignores them)."""
    auth = base64.b64encode(b"ci-bot:pull-s3cret").decode()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {registry.address: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    return path


def load_fixed_time_image(engine: Engine, ref: str, version: str) -> None:
    """Load an image whose config says it was created at 1980-01-01, as ko or Jib build them."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for path, data in [
            ("bin/busybox", BUSYBOX.read_bytes()),
            ("www/health", b"ok\n"),
            ("www/version", f"{version}\n".encode()),
        ]:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o755, 315532801
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1980-01-01T00:00:01Z",
            "config": {
                "Env": [f"APP_VERSION={version}"],
                "ExposedPorts": {"8080/tcp": {}},
                "Entrypoint": ["/bin/busybox"],
                "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"],
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"],
            },
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer/layer.tar"]}]
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path, data in [
            ("layer/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    loaded = engine.call(
        "POST",
        "/images/load",
        params={"quiet": "1"},
        content=archive.getvalue(),
        headers={"Content-Type": "application/x-tar"},
        timeout=60,
    )
    assert '"error"' not in loaded.text, loaded.text


CHANGES = ("stop", "update_restart_policy", "rename", "create", "connect", "start", "remove")


class Crash(BaseException):
    """The bot dying between two engine calls."""


def crash_after(
    monkeypatch: pytest.MonkeyPatch, k: int, *, counted: tuple[str, ...] = CHANGES
) -> list[str]:
    """Make the k-th changing engine call of `counted` raise Crash once it has happened;
    log every such call."""
    calls: list[str] = []

    def wrap(method_name: str) -> Callable[..., Any]:
        original = getattr(DockerClient, method_name)

        def call(self: DockerClient, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            calls.append(method_name)
            if len(calls) == k:
                raise Crash(f"bot killed after {method_name}")
            return result

        return call

    for method_name in counted:
        monkeypatch.setattr(DockerClient, method_name, wrap(method_name))
    return calls
