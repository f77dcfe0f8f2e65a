"""Worker Deployments stopped for the rollback and started again afterwards.

Workers are stopped as `kubectl scale --replicas=0` does it, through the
Deployment's `scale` subresource with the merge patch {"spec":{"replicas":0}}
(the golden test compares both requests on the wire), after recording the
replica count twice: in the step's durable memory and as an annotation on the
worker Deployment, so a crash anywhere leaves the count somewhere and a second
stop never records 0 over it.

Stopped means no pod left, not `status.replicas == 0`: the Deployment status
counts only active pods (kubernetes pkg/controller/replicaset
replica_set_utils.go calculateStatus over controller.FilterActivePods), while a
terminating pod keeps running, and writing, for up to its grace period. So the
step watches the pods matching the worker's selector, terminating ones
included, until none is left, naming them as it waits.

KEDA ScaledObjects on the workers are paused before they are scaled down and
resumed after they are restarted; HPAs are left alone (autoscaling.py says why).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, MutableMapping
from typing import Any, Literal

import urllib3
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, V1Deployment, V1Pod
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from actions.base import (
    ActionError,
    PermanentError,
    Step,
    StepContext,
    StepResult,
    TemporaryError,
    fixed,
    given,
)
from actions.kubernetes import autoscaling
from actions.kubernetes.client import (
    MERGE_PATCH,
    REQUEST_TIMEOUT,
    annotations_of,
    api_error,
    kube_errors,
    object_meta,
    read_deployment,
)
from actions.kubernetes.rollout import selector_string

WORKER_REPLICAS = "rollback-bot/replicas-before-stop"


def _memory_key(namespace: str, worker: str) -> str:
    return f"kubernetes/{namespace}/{worker}/replicas-before-stop"


def _recorded(memory: MutableMapping[str, Any], namespace: str, worker: V1Deployment) -> int | None:
    """Return the replica count recorded before a stop: memory first, then the annotation."""
    name = object_meta(worker).name or ""
    if isinstance(memory.get(_memory_key(namespace, name)), int):
        return int(memory[_memory_key(namespace, name)])
    value = annotations_of(worker).get(WORKER_REPLICAS, "")
    return int(value) if value.isdigit() else None


def _merge_patch(apps: AppsV1Api, *, namespace: str, name: str, body: dict[str, Any]) -> None:
    with kube_errors(f"deployment/{name} in {namespace}"):
        apps.patch_namespaced_deployment(
            name, namespace, body, _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT
        )


def scale(
    apps: AppsV1Api,
    *,
    namespace: str,
    name: str,
    replicas: int,
    kind: Literal["deployment", "statefulset"] = "deployment",
) -> None:
    """Set spec.replicas through the scale subresource, as `kubectl scale` does.

    DaemonSets have no scale subresource (the API server answers 404 to kubectl too).
    """
    patch = (
        apps.patch_namespaced_deployment_scale
        if kind == "deployment"
        else apps.patch_namespaced_stateful_set_scale
    )
    with kube_errors(f"{kind}/{name} in {namespace}"):
        patch(
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )


def _pod_line(pod: V1Pod) -> str:
    meta = object_meta(pod)
    if meta.deletion_timestamp is not None:
        grace = meta.deletion_grace_period_seconds
        return f"{meta.name} (terminating, grace period {grace}s)"
    phase = pod.status.phase if pod.status is not None else None
    return f"{meta.name} ({(phase or 'Pending').lower()})"


def watch_pods(
    core: CoreV1Api, *, namespace: str, selector: str, remaining: Callable[[], float]
) -> Generator[dict[str, V1Pod], None, None]:
    """Yield the pods matching `selector` (terminating included) now and after each change."""
    while remaining() > 0:
        with kube_errors(f"listing pods in {namespace}"):
            listing = core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        pods = {object_meta(p).name or "": p for p in listing.items}
        yield dict(pods)
        watch = Watch()
        stream = watch.stream(
            core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            resource_version=listing.metadata.resource_version if listing.metadata else None,
            timeout_seconds=max(1, math.ceil(remaining())),
            _request_timeout=(REQUEST_TIMEOUT, max(0.1, remaining())),
        )
        try:
            for event in stream:
                if not isinstance(event, dict):
                    continue
                pod = event["object"]
                name = object_meta(pod).name or ""
                if event["type"] == "DELETED":
                    pods.pop(name, None)
                else:
                    pods[name] = pod
                yield dict(pods)
                if remaining() <= 0:
                    return
        except ApiException as exc:
            if exc.status != 410:
                raise api_error(exc, None) from exc
        except (urllib3.exceptions.HTTPError, ConnectionError):
            time.sleep(min(1.0, remaining()))
        finally:
            watch.stop()
            stream.close()


def replica_count(deployment: V1Deployment) -> int:
    return int(deployment.spec.replicas or 0) if deployment.spec else 0


def _api(apps: AppsV1Api) -> ApiClient:
    client: ApiClient = apps.api_client
    return client


class StopWorkers(Step):
    """Pause the workers' KEDA autoscaling, scale them to 0 and wait until no pod is left."""

    name: str = fixed("kubernetes.stop_workers")
    idempotent: bool = fixed(True)
    timeout: float = 120.0
    apps: AppsV1Api = given()
    namespace: str
    workers: tuple[str, ...]

    def describe(self) -> str:
        """Name the workers and what happens to their replica counts."""
        names = ", ".join(f"deployment/{w}" for w in self.workers)
        return (
            f"Stop workers {names} in {self.namespace}: pause their KEDA autoscaling, record "
            "their replica counts, scale them to 0 and wait until none of their pods is left, "
            "terminating ones included"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Pause KEDA, record each count (memory and annotation), scale to 0, wait for no pod.

        Every part is safe to repeat, so a re-run after a crash finishes what was
        half done; a run that finds it all done already (counts recorded, KEDA
        paused, replicas 0, no pod) says so and changes nothing.
        """
        if self._already_stopped(ctx):
            return StepResult(summary="already stopped: no worker pod left", skipped=True)
        # Counts first: pausing KEDA at 0 makes KEDA itself scale the worker down.
        counts = {worker: self._record(worker, ctx) for worker in self.workers}
        lines = [
            autoscaling.pause(_api(self.apps), scaled, namespace=self.namespace, memory=ctx.memory)
            for scaled in autoscaling.scaled_objects(
                _api(self.apps), namespace=self.namespace, workers=self.workers
            )
        ]
        for line in lines:
            ctx.emit(line)
        for worker, count in counts.items():
            scale(self.apps, namespace=self.namespace, name=worker, replicas=0)
            ctx.emit(f"deployment/{worker}: recorded {count} replicas, scaling to 0")
        for worker in self.workers:
            self._wait_gone(worker, ctx)
        lines += [f"deployment/{w}: {n} -> 0 replicas, no pod left" for w, n in counts.items()]
        return StepResult(
            summary=f"stopped {len(counts)} worker deployment(s)",
            output="\n".join(lines),
            data={"replicas_before_stop": counts},
        )

    def _already_stopped(self, ctx: StepContext) -> bool:
        api = _api(self.apps)
        found = autoscaling.scaled_objects(api, namespace=self.namespace, workers=self.workers)
        if any(k.annotations.get(autoscaling.PAUSED_REPLICAS) != "0" for k in found):
            return False
        core = CoreV1Api(api)
        for worker in self.workers:
            deployment = read_deployment(self.apps, namespace=self.namespace, name=worker)
            if _recorded(ctx.memory, self.namespace, deployment) is None:
                return False
            if replica_count(deployment) != 0:
                return False
            with kube_errors(f"listing pods in {self.namespace}"):
                pods = core.list_namespaced_pod(
                    self.namespace,
                    label_selector=selector_string(deployment),
                    _request_timeout=REQUEST_TIMEOUT,
                )
            if pods.items:
                return False
        return True

    def _record(self, worker: str, ctx: StepContext) -> int:
        """Record the count in memory and as an annotation, unless a record exists already."""
        deployment = read_deployment(self.apps, namespace=self.namespace, name=worker)
        recorded = _recorded(ctx.memory, self.namespace, deployment)
        count = replica_count(deployment) if recorded is None else recorded
        ctx.memory[_memory_key(self.namespace, worker)] = count
        if annotations_of(deployment).get(WORKER_REPLICAS) != str(count):
            body = {"metadata": {"annotations": {WORKER_REPLICAS: str(count)}}}
            _merge_patch(self.apps, namespace=self.namespace, name=worker, body=body)
        return count

    def _wait_gone(self, worker: str, ctx: StepContext) -> None:
        deployment = read_deployment(self.apps, namespace=self.namespace, name=worker)
        selector = selector_string(deployment)
        core = CoreV1Api(_api(self.apps))
        watched = watch_pods(
            core, namespace=self.namespace, selector=selector, remaining=ctx.remaining
        )
        shown = ""
        try:
            for pods in watched:
                if not pods:
                    return
                line = f"deployment/{worker}: waiting for {len(pods)} pod(s) to exit: " + ", ".join(
                    _pod_line(p) for _, p in sorted(pods.items())
                )
                if line != shown:
                    shown = line
                    ctx.emit(line)
                if ctx.remaining() <= 0:
                    break
        finally:
            watched.close()
        raise PermanentError(
            f"timed out waiting for the pods of deployment/{worker} in {self.namespace} to exit "
            f"(last: {shown.partition(': ')[2] or 'no pod list seen'}); check them with "
            f"kubectl get pods -n {self.namespace} -l {selector}"
        )


class StartWorkers(Step):
    """Resume the workers' KEDA autoscaling, then scale them back to their recorded counts."""

    name: str = fixed("kubernetes.start_workers")
    idempotent: bool = fixed(True)
    timeout: float = 120.0
    apps: AppsV1Api = given()
    namespace: str
    workers: tuple[str, ...]

    def describe(self) -> str:
        """Name the workers."""
        names = ", ".join(f"deployment/{w}" for w in self.workers)
        return (
            f"Restart workers {names} in {self.namespace}: put their KEDA pause annotations "
            "back as they were and scale them to their recorded replica counts"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Restore every worker and ScaledObject it can, then report the ones it could not.

        Safe to repeat; a run that finds every recorded count back and no
        pause record left says so and changes nothing.
        """
        if self._already_started(ctx):
            return StepResult(summary="already restarted at the recorded counts", skipped=True)
        lines: list[str] = []
        failures: list[ActionError] = []
        # KEDA first: while paused-replicas is "0", KEDA would scale a restarted worker down again.
        try:
            found = autoscaling.scaled_objects(
                _api(self.apps), namespace=self.namespace, workers=self.workers
            )
            for scaled in found:
                line = autoscaling.resume(
                    _api(self.apps), scaled, namespace=self.namespace, memory=ctx.memory
                )
                ctx.emit(line)
                lines.append(line)
        except ActionError as exc:
            failures.append(exc)
            lines.append(f"KEDA: {exc}")
        for worker in self.workers:
            try:
                lines.append(self._start(worker, ctx))
            except ActionError as exc:
                failures.append(exc)
                lines.append(f"deployment/{worker}: {exc}")
        if any(isinstance(f, TemporaryError) for f in failures):
            raise TemporaryError("; ".join(str(f) for f in failures), delay=2.0)
        if failures:
            raise PermanentError("; ".join(str(f) for f in failures))
        return StepResult(
            summary=f"restarted {len(self.workers)} worker deployment(s)", output="\n".join(lines)
        )

    def _already_started(self, ctx: StepContext) -> bool:
        api = _api(self.apps)
        found = autoscaling.scaled_objects(api, namespace=self.namespace, workers=self.workers)
        if any(autoscaling.RECORD in k.annotations for k in found):
            return False
        for worker in self.workers:
            deployment = read_deployment(self.apps, namespace=self.namespace, name=worker)
            recorded = ctx.memory.get(_memory_key(self.namespace, worker))
            if WORKER_REPLICAS in annotations_of(deployment) or recorded is None:
                return False
            if replica_count(deployment) != recorded:
                return False
        return True

    def _start(self, worker: str, ctx: StepContext) -> str:
        deployment = read_deployment(self.apps, namespace=self.namespace, name=worker)
        count = _recorded(ctx.memory, self.namespace, deployment)
        if count is None:
            if replica_count(deployment) > 0:
                left = replica_count(deployment)
                return f"deployment/{worker}: nothing recorded, left at {left} replicas"
            raise PermanentError(
                f"no replica count recorded for deployment/{worker} in {self.namespace} "
                f"(memory and the {WORKER_REPLICAS} annotation are both empty); scale it by hand"
            )
        if replica_count(deployment) != count:
            scale(self.apps, namespace=self.namespace, name=worker, replicas=count)
        if WORKER_REPLICAS in annotations_of(deployment):
            body = {"metadata": {"annotations": {WORKER_REPLICAS: None}}}
            _merge_patch(self.apps, namespace=self.namespace, name=worker, body=body)
        line = f"deployment/{worker}: scaled back to {count} replicas"
        ctx.emit(line)
        return line
