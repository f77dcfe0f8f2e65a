"""The bot's image: its recipe, and the image built by the real Docker engine and started.

The build runs the project's Dockerfile unchanged through `docker build` (the classic
builder) on the private dockerd of tests/fakes/dockerd.py. Docker Hub is out of reach
here, so BASE is overridden with a Debian bookworm base made from Debian's packages by
tools/build-test-base (cached between runs); `--network host` lets the build's pip and
apt reach the index and the Debian mirror this machine uses. The container then runs as
the Deployment runs it (read-only root, every capability dropped, no new privileges,
/tmp a tmpfs, the ConfigMap's rollback.yml), after a `db upgrade` container as its init
container does, against the Slack stand-in (sandbox/slack), which it calls at start
(Bolt's auth.test).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sandbox.slack import FakeSlack
from tests.fakes.parts import free_port, require

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.dockerd"]

ROOT = Path(__file__).parents[2]
LOCK = ROOT / "tools" / "image-requirements.txt"
BASE_TAG = "rollback-bot-base:test"
IMAGE_TAG = "rollback-bot:test"
UID = "10001"


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _pins() -> dict[str, str]:
    """Name -> version of every pin in the image's requirements file."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


# The recipe: fast, no engine needed.


def test_dockerfile_pins_its_base_by_digest_runs_as_non_root_and_health_checks() -> None:
    text = _dockerfile()
    (base,) = re.findall(r"^ARG BASE=(\S+)$", text, flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base)
    assert re.findall(r"^FROM (.+)$", text, flags=re.MULTILINE) == ["${BASE} AS build", "${BASE}"]
    assert re.search(r"^USER 10001:10001$", text, flags=re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, flags=re.MULTILINE)
    assert "--require-hashes -r image-requirements.txt" in text
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!bot/" in ignored and "!tools/image-requirements.txt" in ignored


def test_every_dependency_of_the_bot_is_pinned_with_hashes_in_the_image_requirements() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _pins()
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    unmet = []
    for line in wanted:
        requirement = Requirement(line)
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{line} (pinned: {version})")
    assert unmet == [], "run tools/lock-image-requirements"
    blocks = [b for b in re.split(r"\n(?=\S)", LOCK.read_text()) if not b.startswith("#")]
    assert len(blocks) == len(pins) and all("--hash=sha256:" in block for block in blocks)


def test_what_the_dockerfile_copies_is_enough_to_install_the_bot(tmp_path: Path) -> None:
    # The build stage runs `pip install --no-deps .` on exactly what the Dockerfile COPYs
    # (and .dockerignore lets through); build the same wheel here from the same files.
    copied = [
        name
        for line in re.findall(r"^COPY (?!--from)(.+)$", _dockerfile(), flags=re.MULTILINE)
        for name in line.split()[:-1]
    ]
    assert sorted(copied) == [
        "README.md",
        "actions",
        "bot",
        "handlers",
        "pyproject.toml",
        "sandbox",
        "tools/image-requirements.txt",
    ]
    context = tmp_path / "context"
    context.mkdir()
    for name in copied:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, context / name)
    wheel_args = ["--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel")]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *wheel_args, str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("rollback_bot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bot/__main__.py" in names and "handlers/alerts.py" in names
    assert any(
        n.startswith("bot/persistence/migrations/versions/") and n.endswith(".py") for n in names
    )
    assert any(n.endswith("entry_points.txt") for n in names)


# The image, built and run.


def _pip_index() -> str | None:
    """The index this machine's pip uses, when the build can use it too (http or https)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        shown = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
        )
        url = shown.stdout.strip() if shown.returncode == 0 else None
    return url if url and url.startswith(("http://", "https://")) else None


def _build_args() -> list[str]:
    args = ["--build-arg", f"BASE={BASE_TAG}"]
    index = _pip_index()
    if index:
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy"):
        if os.environ.get(proxy):  # Docker's predefined build args: the build's way out
            args += ["--build-arg", f"{proxy}={os.environ[proxy]}"]
    return args


@pytest.fixture(scope="module")
def bot_image(dockerd: Engine) -> Iterator[str]:
    """The bot's image built from the Dockerfile on the Debian base; removed afterwards."""
    require("debootstrap", package="debootstrap")
    env = {**os.environ, "DOCKER_HOST": f"unix://{dockerd.socket}"}
    env["DOCKER_CONFIG"] = str(dockerd.root / "cli")
    base = subprocess.run(
        [str(ROOT / "tools" / "build-test-base"), "--tag", BASE_TAG],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert base.returncode == 0, base.stderr[-3000:]
    try:
        built = dockerd.cli(
            "build", "--network", "host", *_build_args(), "-t", IMAGE_TAG, str(ROOT)
        )
        assert built.returncode == 0, (built.stdout + built.stderr)[-5000:]
        yield IMAGE_TAG
    finally:
        dockerd.cli("rmi", "-f", IMAGE_TAG, BASE_TAG)
        dockerd.cli("image", "prune", "-f")  # the build stage's image


class _Relay(socketserver.ThreadingTCPServer):
    """Forward TCP from an address containers reach (their network's gateway) to 127.0.0.1."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.target = target
        super().__init__((listen, 0), _Pipe)


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Relay)
        with socket.create_connection(self.server.target) as upstream:
            back = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
            back.start()
            _copy(self.request, upstream)
            back.join(timeout=30)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


@dataclass
class Bot:
    """The served bot's container and what it needs: its volume, network and Slack."""

    engine: Engine
    image: str
    network: str
    volume: str
    config: Path
    env: list[str]

    def start(self, name: str) -> int:
        """Start the image's default command (serve) as the Deployment does; return its port."""
        port = free_port()
        published = {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        self.engine.run(name, self._body(PortBindings=published), networks={self.network: {}})
        return port

    def upgrade(self, name: str) -> int:
        """Run `db upgrade` as the Deployment's init container does; return its exit code."""
        self.engine.run(name, {**self._body(NetworkMode="none"), "Cmd": ["db", "upgrade"]})
        return self.engine.wait(name)

    def _body(self, **host: Any) -> dict[str, Any]:
        return {
            "Image": self.image,
            "Env": self.env,
            "HostConfig": {
                "ReadonlyRootfs": True,
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
                "Tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
                "Mounts": [
                    {"Type": "volume", "Source": self.volume, "Target": "/app"},
                    {
                        "Type": "bind",
                        "Source": str(self.config),
                        "Target": "/etc/rollback-bot/rollback.yml",
                        "ReadOnly": True,
                    },
                ],
                **host,
            },
        }


def _wait_ready(port: int, engine: Engine, name: str) -> httpx.Response:
    """/readyz once it answers 200; the container's log if it never does or the bot exits."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not engine.inspect(name)["State"]["Running"]:
            break
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if response.status_code == 200:
                return response
        time.sleep(0.5)
    logs = engine.cli("logs", name)
    raise AssertionError(f"{name} never became ready; its log:\n{logs.stderr[-3000:]}")


@pytest.fixture(scope="module")
def bot(dockerd: Engine, bot_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """Everything the container needs, with its database schema in place; removed afterwards."""
    config = tmp_path_factory.mktemp("image") / "rollback.yml"
    configmap = yaml.safe_load((ROOT / "deploy" / "configmap.yaml").read_text())
    config.write_text(configmap["data"]["rollback.yml"])
    config.chmod(0o644)
    network = dockerd.network()
    (ipam,) = dockerd.call("GET", f"/networks/{network}").json()["IPAM"]["Config"]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    volume = f"rbt-image-{uuid.uuid4().hex[:8]}"
    dockerd.call("POST", "/volumes/create", json={"Name": volume})
    with FakeSlack() as slack:
        host, port = slack.base.removeprefix("http://").split(":")
        relay = _Relay(gateway, (host, int(port)))
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        env = [
            f"SLACK_BOT_TOKEN={slack.token}",
            f"SLACK_SIGNING_SECRET={uuid.uuid4().hex}",
            f"SLACK_API_URL=http://{gateway}:{relay.server_address[1]}/api/",
            "DATABASE_URL=sqlite:////app/rollback-bot.db",
        ]
        bot = Bot(dockerd, bot_image, network, volume, config, env)
        try:
            name = f"rbt-image-upgrade-{uuid.uuid4().hex[:8]}"
            assert bot.upgrade(name) == 0, dockerd.cli("logs", name).stderr
            yield bot
        finally:
            relay.shutdown()
            relay.server_close()
            for container in dockerd.call("GET", "/containers/json?all=1").json():
                if any(n.startswith("/rbt-image-") for n in container["Names"]):
                    dockerd.http.delete(f"/v1.41/containers/{container['Id']}?force=1")
            dockerd.http.delete(f"/v1.41/networks/{network}")
            dockerd.http.delete(f"/v1.41/volumes/{volume}")


@dataclass(frozen=True)
class Served:
    engine: Engine
    name: str
    port: int
    ready: httpx.Response


@pytest.fixture(scope="module")
def served(bot: Bot) -> Served:
    """The image started with its default command, ready."""
    name = f"rbt-image-{uuid.uuid4().hex[:8]}"
    port = bot.start(name)
    return Served(bot.engine, name, port, _wait_ready(port, bot.engine, name))


def test_the_built_image_answers_readyz_and_healthz(served: Served) -> None:
    assert served.ready.json() == {"ready": True, "problems": []}
    health = httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=5)
    assert (health.status_code, health.text) == (200, "ok")


def test_the_bot_in_the_container_runs_as_the_unprivileged_user(served: Served) -> None:
    assert served.engine.inspect(served.name)["Config"]["User"] == f"{UID}:{UID}"
    assert served.engine.exec(served.name, "id", "-u").strip() == UID
    status = served.engine.exec(served.name, "cat", "/proc/1/status")
    (uids,) = re.findall(r"^Uid:\s+(.+)$", status, flags=re.MULTILINE)
    assert uids.split() == [UID] * 4  # real, effective, saved, filesystem


def test_dockers_healthcheck_reports_the_container_healthy(served: Served) -> None:
    deadline = time.monotonic() + 120
    health = served.engine.inspect(served.name)["State"]["Health"]
    while health["Status"] == "starting" and time.monotonic() < deadline:
        time.sleep(1)
        health = served.engine.inspect(served.name)["State"]["Health"]
    assert health["Status"] == "healthy", health["Log"]
    assert health["Log"][-1]["ExitCode"] == 0


def test_the_image_holds_exactly_the_pinned_python_packages(served: Served) -> None:
    frozen = served.engine.exec(
        served.name, "pip", "list", "--format=freeze", "--disable-pip-version-check"
    )
    installed = {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", frozen, flags=re.MULTILINE)
    }
    assert installed.pop("rollback-bot") == "0.1.0"
    installed.pop("pip")  # the base's, which created the virtual environment
    assert installed == _pins()


def test_docker_stop_ends_the_bot_cleanly(bot: Bot) -> None:
    name = f"rbt-image-stop-{uuid.uuid4().hex[:8]}"
    port = bot.start(name)
    _wait_ready(port, bot.engine, name)
    stopped = bot.engine.cli("stop", "--time", "60", name)
    assert stopped.returncode == 0, stopped.stderr
    state = bot.engine.inspect(name)["State"]
    logs = bot.engine.cli("logs", name)
    assert state["ExitCode"] == 0, logs.stdout + logs.stderr
    assert "stopping: finishing requests in flight" in logs.stdout
