"""A real, private Docker engine (and registry) for the Docker tests.

Not a fake: Debian's dockerd runs with its own socket, data root and exec root
under a temporary directory, without a default bridge (`--bridge=none`, so two
engines on one machine never fight over docker0 or its subnet) and with a
random private address pool for the networks tests create. Test images are
built once per session `FROM scratch` with Debian's static busybox:

- `rbt-app:v1`, `rbt-app:v2`, `rbt-app:v3`: `busybox httpd` on port 8080 serving
  /www (health and version files), ENV APP_VERSION and a label per version;
- `rbt-app:crash`: exits with code 3 at once (a crash-looping release).

Containers reach nothing outside this machine; ports are published on
127.0.0.1 only. At teardown every container and network is removed, dockerd and
the registry are stopped, any bridge left with an address in the engine's pool
is deleted and whatever dockerd left mounted under the directory is unmounted.
Without dockerd, busybox or root: skip, or fail when CI=true.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from tests.fakes.parts import free_port, unavailable
from tests.fakes.processes import daemon, stop

INSTALL = "sudo tools/install-test-deps"
BUSYBOX = Path("/bin/busybox")
APP = "rbt-app"
VERSIONS = ("v1", "v2", "v3")
PREFIX = "rbt-dockerd-"  # then the pid of the test process that started the engine


def missing(what: str) -> NoReturn:
    """Fail under CI, else skip, with the command that installs what is missing."""
    unavailable(f"{what}; install with `{INSTALL}` (needs root to run dockerd)")


@dataclass
class Engine:
    """A running private dockerd: its socket and a raw Engine API client for test setup."""

    root: Path
    socket: str
    http: httpx.Client
    subnet_base: int

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, f"/v1.41{path}", **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response

    def inspect(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/containers/{name}/json").json())

    def exists(self, name: str) -> bool:
        return self.http.get(f"/v1.41/containers/{name}/json").status_code == 200

    def build(self, tag: str, dockerfile: str, files: dict[str, bytes | Path]) -> str:
        """Build an image from a Dockerfile and files; return its id."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, content in {"Dockerfile": dockerfile.encode(), **files}.items():
                data = content.read_bytes() if isinstance(content, Path) else content
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        response = self.call(
            "POST",
            "/build",
            params={"t": tag, "rm": "1", "forcerm": "1"},
            content=buffer.getvalue(),
            headers={"Content-Type": "application/x-tar"},
            timeout=120,
        )
        for line in response.text.splitlines():
            if '"error"' in line:
                raise AssertionError(f"build of {tag} failed: {line}")
        return str(self.call("GET", f"/images/{tag}/json").json()["Id"])

    def network(self) -> str:
        """Create a user-defined bridge network with a subnet of our own; return its name."""
        name = f"rbt-net-{uuid.uuid4().hex[:8]}"
        third = random.randint(1, 250)
        subnet = f"10.{self.subnet_base}.{third}.0/24"
        body = {"Name": name, "CheckDuplicate": True, "IPAM": {"Config": [{"Subnet": subnet}]}}
        for _ in range(20):
            response = self.http.post("/v1.41/networks/create", json=body)
            if response.status_code == 201:
                return name
            third = random.randint(1, 250)
            body["IPAM"] = {"Config": [{"Subnet": f"10.{self.subnet_base}.{third}.0/24"}]}
        raise AssertionError(f"cannot create network: {response.text}")

    def run(
        self, name: str, body: dict[str, Any], *, networks: dict[str, Any] | None = None
    ) -> str:
        """Create and start a container as `docker run` would; return its id."""
        networks = dict(networks or {})
        first = next(iter(networks), None)
        if first:
            body = {**body, "NetworkingConfig": {"EndpointsConfig": {first: networks.pop(first)}}}
            body["HostConfig"] = {**body.get("HostConfig", {}), "NetworkMode": first}
        created = self.call("POST", "/containers/create", params={"name": name}, json=body)
        container_id = str(created.json()["Id"])
        for network, endpoint in networks.items():
            self.call(
                "POST",
                f"/networks/{network}/connect",
                json={"Container": container_id, "EndpointConfig": endpoint},
            )
        self.call("POST", f"/containers/{container_id}/start")
        return container_id

    def exec(self, name: str, *cmd: str, user: str = "") -> str:
        """Run a command in a running container; return its output (stdout and stderr)."""
        body = {"Cmd": list(cmd), "AttachStdout": True, "AttachStderr": True, "User": user}
        exec_id = self.call("POST", f"/containers/{name}/exec", json=body).json()["Id"]
        raw = self.call("POST", f"/exec/{exec_id}/start", json={"Detach": False}).content
        out, i = b"", 0
        while i + 8 <= len(raw):  # the multiplexed stream: 8-byte header per frame
            size = int.from_bytes(raw[i + 4 : i + 8], "big")
            out += raw[i + 8 : i + 8 + size]
            i += 8 + size
        return out.decode()

    def wait(self, name: str, *, timeout: float = 300) -> int:
        """Wait for a container to exit; return its exit code."""
        response = self.call("POST", f"/containers/{name}/wait", timeout=timeout)
        return int(response.json()["StatusCode"])

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """Run the docker command line against this engine (the classic builder: no buildx)."""
        docker = shutil.which("docker")
        if docker is None:
            missing("the docker command line (Debian docker.io) is not installed")
        env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.root / "cli"),
            "DOCKER_BUILDKIT": "0",
        }
        return subprocess.run(
            [str(docker), *args], capture_output=True, text=True, env=env, timeout=timeout
        )

    def remove_all(self) -> None:
        for c in self.call("GET", "/containers/json", params={"all": "1"}).json():
            self.http.delete(f"/v1.41/containers/{c['Id']}", params={"force": "1", "v": "1"})
        for n in self.call("GET", "/networks").json():
            if n["Name"] not in ("bridge", "host", "none"):  # dockerd's own, which stay
                self.http.delete(f"/v1.41/networks/{n['Id']}")


def _wait(check: Any, *, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not come up; its log:\n{log.read_text()[-3000:]}")


def _free_address_base() -> int:
    """Pick X for 10.X.0.0/16 that no interface here uses (another test dockerd's bridges)."""
    used: set[int] = set()
    if shutil.which("ip"):
        shown = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True)
        used = {int(part.split(".")[1]) for part in shown.stdout.split() if part.startswith("10.")}
    return random.choice([x for x in range(100, 251) if x not in used])


def _remove_bridges(base: int) -> None:
    """Delete the Linux bridges left with addresses in this engine's pool, 10.<base>.0.0/16.

    dockerd removes a network's bridge when the network is removed; a network a test made and
    did not remove, or an engine that was killed, leaves it behind (`br-<id>`, 10.<base>.x.1).
    """
    if shutil.which("ip") is None:
        return
    shown = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True)
    for line in shown.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].startswith(f"10.{base}."):
            subprocess.run(["ip", "link", "delete", fields[1]], check=False, capture_output=True)


def _unmount_under(root: Path) -> None:
    """Unmount whatever dockerd left mounted under `root` (overlays, netns, shm), deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _build_images(engine: Engine) -> None:
    for version in VERSIONS:
        engine.build(
            f"{APP}:{version}",
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY health /www/health\n"
            f"COPY version /www/version\nENV APP_VERSION={version} PATH=/bin\n"
            f"LABEL app.version={version}\nEXPOSE 8080\nWORKDIR /www\n"
            'ENTRYPOINT ["/bin/busybox"]\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
            {"busybox": BUSYBOX, "health": b"ok\n", "version": f"{version}\n".encode()},
        )
    engine.build(
        f"{APP}:crash",
        "FROM scratch\nCOPY busybox /bin/busybox\nENV APP_VERSION=crash PATH=/bin\n"
        'LABEL app.version=crash\nEXPOSE 8080\nENTRYPOINT ["/bin/busybox"]\n'
        'CMD ["sh", "-c", "exit 3"]\n',
        {"busybox": BUSYBOX},
    )


def _end_process(pid: int) -> None:
    """SIGTERM a process we started, give it 30 s to exit, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_orphans() -> None:
    """Stop the engines whose test process (the pid in their directory's name) is gone (a run
    killed before its teardown), then unmount and remove what they left."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = re.fullmatch(rf"{PREFIX}(\d+)-\w+", root.name)
        if owner is None or Path(f"/proc/{owner.group(1)}").exists():
            continue
        pidfile, pool = root / "dockerd.pid", root / "address-base"
        if pidfile.exists():
            _end_process(int(pidfile.read_text()))
        if pool.exists():
            _remove_bridges(int(pool.read_text()))
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Engine]:
    """Start a private dockerd with the test images built; stop and unmount it afterwards."""
    if shutil.which("dockerd") is None or not BUSYBOX.exists():
        missing("dockerd (Debian docker.io) or busybox-static is not installed")
    if os.geteuid() != 0:
        missing("dockerd needs root and the tests do not run as root")
    _stop_orphans()
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    sock, log = root / "docker.sock", root / "dockerd.log"
    base = _free_address_base()
    (root / "address-base").write_text(str(base))  # for the bridges, should teardown not run
    args = [
        "dockerd",
        f"--host=unix://{sock}",
        f"--data-root={root}/data",
        f"--exec-root={root}/exec",
        f"--pidfile={root}/dockerd.pid",
        "--storage-driver=overlay2",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--bridge=none",
        f"--default-address-pool=base=10.{base}.0.0/16,size=24",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://d")
    engine = Engine(root, str(sock), http, base)
    try:
        _wait(
            lambda: sock.exists() and http.get("/_ping").status_code == 200,
            timeout=30,
            what="dockerd",
            log=log,
        )
        _build_images(engine)
        yield engine
    finally:
        with contextlib.suppress(httpx.HTTPError, AssertionError):
            engine.remove_all()
        http.close()
        stop(process)
        _remove_bridges(base)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Registry:
    """A local docker-registry (Distribution) on 127.0.0.1."""

    address: str


@contextlib.contextmanager
def serve_registry(
    prefix: str, *, extra: dict[str, Any] | None = None, ready_status: int = 200
) -> Iterator[Registry]:
    """Run Debian's docker-registry on a free loopback port with a temporary store (and
    `extra` config, such as auth); stop it and remove the store afterwards."""
    if shutil.which("docker-registry") is None:
        missing("docker-registry is not installed")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    config, log = root / "config.yml", root / "registry.log"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
                **(extra or {}),
            }
        )
    )
    try:
        with daemon(["docker-registry", "serve", str(config)], log=log):
            _wait(
                lambda: httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == ready_status,
                timeout=20,
                what="docker-registry",
                log=log,
            )
            yield Registry(f"127.0.0.1:{port}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(dockerd: Engine) -> Iterator[Registry]:
    """Run Debian's docker-registry on a free loopback port with a temporary store."""
    with serve_registry("rbt-registry-") as served:
        yield served
