"""`FakeKubernetes`: the fake API server on a free local port, with its controller thread.

HTTP/1.1 with keep-alive for ordinary answers (what client-go and urllib3
expect), chunked transfer for watches so each event reaches the client as soon
as it is written. The controller runs in its own thread and wakes on every
write, as kube-controller-manager reacts to its informers, so clients see the
same asynchrony as on a real cluster: a patched Deployment is first
unobserved, then progressing, then complete.

Test and demo helpers build state directly (`add_deployment` and
`add_workload` write a whole rollout history with back-dated timestamps),
switch failure modes on (`pause`, `block_ready`, `fail_rollouts`,
`break_image`, `expire_progress_deadlines`, `add_webhook`, `enforce_rbac`),
slow the cluster down (`ready_delay`, `replica_set_delay`, `terminate_delay`)
and move its clock (`advance_clock`).
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from sandbox.kubernetes.api import Api, Reply, Request, WatchStream
from sandbox.kubernetes.autoscalers import Autoscalers
from sandbox.kubernetes.controller import Controller
from sandbox.kubernetes.gitops import GitOps
from sandbox.kubernetes.objects import CHANGE_CAUSE, ApiError, Obj, controlled_by, revision_of
from sandbox.kubernetes.store import Store
from sandbox.kubernetes.workloads import Workloads

BUSY_PASS = 0.02
"""Seconds between controller passes while passes still change objects."""
IDLE_PASS = 0.1
"""The longest wait between passes once nothing changes: how late a pod may turn Ready."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKubernetes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm
        # and delayed ACKs add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        self.server.fake._connections.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=url.path,
            query={k: v[-1] for k, v in parse_qs(url.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        try:
            answer = self.server.fake.api.handle(request)
        except ApiError as exc:
            answer = Reply(exc.code, exc.status())
        if isinstance(answer, WatchStream):
            self._stream(answer)
        else:
            self._reply(answer)

    def _reply(self, reply: Reply) -> None:
        data = reply.encode()
        self.send_response(reply.status)
        kind = "text/plain" if isinstance(reply.body, str) else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: WatchStream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        streams = self.server.fake._streams
        streams.add(self)
        try:
            for event in events:
                data = Reply(200, event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            streams.discard(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


class FakeKubernetes:
    """A local Kubernetes API server with the controllers a rollback meets (see the package)."""

    def __init__(self, *, ready_delay: float = 1.0) -> None:
        self._clock_offset = 0.0
        self._advanced = 0.0
        self.store = Store(clock=lambda: time.time() + self._advanced + self._clock_offset)
        self.controller = Controller(self.store, ready_delay=ready_delay)
        self.autoscalers = Autoscalers(self.store)
        self.workloads = Workloads(self.store, self.controller.replicas)
        self.gitops = GitOps(self.store)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.api = Api(self.store, f"127.0.0.1:{self._server.server_address[1]}")
        self.api.terminate = self.controller.replicas.terminate
        self._connections: set[socket.socket] = set()
        self._streams: set[BaseHTTPRequestHandler] = set()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def ready_delay(self) -> float:
        """Seconds a new replica takes to become ready."""
        return self.controller.ready_delay

    @ready_delay.setter
    def ready_delay(self, seconds: float) -> None:
        self.controller.ready_delay = seconds

    @property
    def replica_set_delay(self) -> float:
        """Seconds the ReplicaSet controller takes to act on a changed ReplicaSet."""
        return self.controller.replicas.replica_set_delay

    @replica_set_delay.setter
    def replica_set_delay(self, seconds: float) -> None:
        self.controller.replicas.replica_set_delay = seconds

    @property
    def terminate_delay(self) -> float:
        """Seconds a deleted pod's containers take to exit (cut short by its grace period)."""
        return self.controller.replicas.terminate_delay

    @terminate_delay.setter
    def terminate_delay(self, seconds: float) -> None:
        self.controller.replicas.terminate_delay = seconds

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        """Serve and run the controller in background threads."""
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731
        for target in (serve, self._run_controller):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the controller, end open watches, close connections and the socket."""
        self.store.close()
        if self._threads:  # shutdown() waits for serve_forever, which a fake never started lacks
            self._server.shutdown()
        deadline = time.monotonic() + 5
        while self._streams and time.monotonic() < deadline:
            time.sleep(0.01)
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run_controller(self) -> None:
        """Reconcile on every write at once, and on a timer for what happens with time alone
        (a pod turning Ready, a deadline passing). A pass that changed nothing doubles the
        timer up to `IDLE_PASS`, so an idle cluster does not spend the process's CPU copying
        objects 50 times a second (a real API server runs in another process)."""
        wait = BUSY_PASS
        while True:
            with self.store.cond:
                if self.store.closed:
                    return
                self.store.cond.wait(timeout=wait)
                before = self.store.version
            self.controller.sync_all()
            self.workloads.sync_all()
            self.autoscalers.sync_all()
            self.gitops.sync_all()
            wait = BUSY_PASS if self.store.version != before else min(IDLE_PASS, wait * 2)

    # --- helpers for tests and the demo ----------------------------------------------------------

    def add_webhook(self, name: str, check: Callable[[str, Obj], str | None]) -> None:
        """Add a validating admission webhook: `check(resource, obj)` returns a refusal or None."""
        with self.store.cond:
            self.api.webhooks.append((name, check))

    def enforce_rbac(self, manifest: str, *, token: str, user: str) -> None:
        """Authorize requests bearing `token` as `user`, by the Roles and bindings in `manifest`."""
        with self.store.cond:
            self.api.rbac.load(manifest)
            self.api.rbac.tokens[token] = user

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        context: str = "sandbox",
        namespace: str = "default",
        token: str | None = None,
    ) -> Path:
        """Write a kubeconfig whose `context` points at this server; return its path."""
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": token} if token else {}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": namespace},
                }
            ],
            "current-context": context,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        images: list[str],
        replicas: int = 1,
        container_name: str | None = None,
        revision_spacing: float = 3600.0,
    ) -> Obj:
        """Create a Deployment whose history has one revision per image, oldest first.

        Each image is rolled out in turn, `revision_spacing` seconds apart and
        ending now, with a change-cause annotation as `kubectl --record` wrote it.
        """
        if not images:
            raise ValueError("a deployment needs at least one image")
        container = container_name or name
        with self.store.cond:
            try:
                for index, image in enumerate(images):
                    self._clock_offset = -(len(images) - 1 - index) * revision_spacing
                    self._roll_out(
                        namespace, name, container, image, replicas=replicas, first=index == 0
                    )
            finally:
                self._clock_offset = 0.0
            return self.deployment(namespace, name)

    def _roll_out(
        self, namespace: str, name: str, container: str, image: str, *, replicas: int, first: bool
    ) -> None:
        if first:
            cause = f"kubectl create deployment {name} --image={image} --replicas={replicas}"
            labels = {"app": name}
            self.store.create(
                "deployments",
                {
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": labels,
                        "annotations": {CHANGE_CAUSE: cause},
                    },
                    "spec": {
                        "replicas": replicas,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": container, "image": image}]},
                        },
                    },
                },
            )
        else:
            obj = self.store.get("deployments", namespace, name)
            obj["metadata"].setdefault("annotations", {})[CHANGE_CAUSE] = (
                f"kubectl set image deployment/{name} {container}={image}"
            )
            for spec in obj["spec"]["template"]["spec"]["containers"]:
                if spec["name"] == container:
                    spec["image"] = image
            self.store.update("deployments", obj)
        self.controller.sync(namespace, name, settle=True)

    def add_workload(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        images: list[str],
        replicas: int = 2,
        strategy: Obj | None = None,
        extra: Obj | None = None,
        revision_spacing: float = 3600.0,
    ) -> Obj:
        """Create a StatefulSet or DaemonSet whose history has one revision per image, oldest first.

        `strategy` is its updateStrategy, `extra` more spec fields (podManagementPolicy,
        minReadySeconds); each image is rolled out in turn and settled, `revision_spacing`
        seconds apart, ending now.
        """
        if resource not in ("statefulsets", "daemonsets") or not images:
            raise ValueError("a statefulsets or daemonsets workload needs at least one image")
        labels = {"app": name}
        spec: Obj = {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": images[0]}]},
            },
        }
        if resource == "statefulsets":
            spec.update(replicas=replicas, serviceName=name)
        if strategy is not None:
            spec["updateStrategy"] = strategy
        spec.update(extra or {})
        with self.store.cond:
            try:
                for index, image in enumerate(images):
                    self._clock_offset = -(len(images) - 1 - index) * revision_spacing
                    if index == 0:
                        body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
                        self.store.create(resource, body)
                    else:
                        obj = self.store.get(resource, namespace, name)
                        obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
                        self.store.update(resource, obj)
                    self.workloads.sync(resource, namespace, name, settle=True)
            finally:
                self._clock_offset = 0.0
            return self.store.get(resource, namespace, name)

    def set_image(self, resource: str, namespace: str, name: str, image: str) -> Obj:
        """Set the first container's image of a workload, as `kubectl set image` would."""
        with self.store.cond:
            obj = self.store.get(resource, namespace, name)
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
            return self.store.update(resource, obj)

    def settle_workload(self, resource: str, namespace: str, name: str) -> Obj:
        """Run the StatefulSet or DaemonSet controller for one object now and return it."""
        self.workloads.sync(resource, namespace, name)
        return self.store.get(resource, namespace, name)

    def controller_revisions(self, resource: str, namespace: str, name: str) -> list[Obj]:
        """The ControllerRevisions of a StatefulSet or DaemonSet, by revision."""
        with self.store.cond:
            return self.workloads.revisions(self.store.get(resource, namespace, name))

    def deployment(self, namespace: str, name: str) -> Obj:
        """Return the stored Deployment."""
        return self.store.get("deployments", namespace, name)

    def replica_sets(self, namespace: str, name: str) -> list[Obj]:
        """Return the ReplicaSets the Deployment controls, lowest revision first."""
        with self.store.cond:
            owner = self.store.get("deployments", namespace, name)
            owned = [
                rs for rs in self.store.list("replicasets", namespace) if controlled_by(rs, owner)
            ]
        return sorted(owned, key=revision_of)

    def pods(self, namespace: str, name: str) -> list[Obj]:
        """Return the pods of the Deployment's ReplicaSets, terminating ones included."""
        with self.store.cond:
            return [
                pod
                for rs in self.replica_sets(namespace, name)
                for pod in self.controller.replicas.pods_of(rs)
            ]

    def update_deployment(self, namespace: str, name: str, change: dict[str, Any]) -> Obj:
        """Merge `change` into the Deployment's spec and metadata, as `kubectl edit` would."""
        with self.store.cond:
            obj = self.store.get("deployments", namespace, name)
            for section in ("metadata", "spec"):
                obj[section] = _deep_merge(obj[section], change.get(section, {}))
            return self.store.update("deployments", obj)

    def pause(self, namespace: str, name: str, paused: bool = True) -> Obj:
        """Pause (or resume) a Deployment, like `kubectl rollout pause`."""
        return self.update_deployment(namespace, name, {"spec": {"paused": paused}})

    def block_ready(self, namespace: str, name: str, blocked: bool = True) -> None:
        """Make the Deployment's new replicas never become ready (or let them again)."""
        with self.store.cond:
            key = (namespace, name)
            (self.controller.blocked.add if blocked else self.controller.blocked.discard)(key)
            self.store.cond.notify_all()

    def fail_rollouts(self, namespace: str, name: str, failing: bool = True) -> None:
        """Make the Deployment's rollouts stall and exceed their progress deadline at once."""
        with self.store.cond:
            key = (namespace, name)
            for flags in (self.controller.blocked, self.controller.failing):
                (flags.add if failing else flags.discard)(key)
            self.store.cond.notify_all()

    def break_image(self, image: str, broken: bool = True) -> None:
        """Make pods running `image` never become Ready (a bad release), or let them again."""
        with self.store.cond:
            images = self.controller.replicas.broken_images
            (images.add if broken else images.discard)(image)
            self.store.cond.notify_all()

    def expire_progress_deadlines(self, namespace: str, name: str, expired: bool = True) -> None:
        """Treat the Deployment's progressDeadlineSeconds as 0 (or as written again)."""
        with self.store.cond:
            failing = self.controller.failing
            (failing.add if expired else failing.discard)((namespace, name))
            self.store.cond.notify_all()

    def set_demand(self, namespace: str, name: str, replicas: int | None) -> None:
        """Say how many replicas a ScaledObject's triggers (or an HPA's metrics) ask for."""
        with self.store.cond:
            if replicas is None:
                self.autoscalers.demand.pop((namespace, name), None)
            else:
                self.autoscalers.demand[(namespace, name)] = replicas
            self.store.cond.notify_all()

    def advance_clock(self, seconds: float) -> None:
        """Move the fake cluster's clock forward (minReadySeconds, deadlines) without waiting."""
        with self.store.cond:
            self._advanced += seconds
            self.store.cond.notify_all()

    def settle(self, namespace: str, name: str) -> Obj:
        """Run the controller for one Deployment now and return it."""
        self.controller.sync(namespace, name)
        return self.deployment(namespace, name)


def _deep_merge(base: Any, change: Any) -> Any:
    if not isinstance(change, dict) or not isinstance(base, dict):
        return copy.deepcopy(change)
    merged = dict(base)
    for key, value in change.items():
        merged[key] = _deep_merge(base.get(key), value)
    return merged
