"""Worker Deployments stopped for the rollback and started again afterwards.

Workers are stopped by scaling to 0 after recording the replica count twice:
in the step's durable memory and as an annotation on the worker Deployment,
written in the same merge patch that scales it, so a crash anywhere leaves the
count somewhere and a second stop never records 0 over it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import AppsV1Api, V1Deployment, V1DeploymentStatus

from actions.base import ActionError, PermanentError, StepContext, StepResult, TemporaryError
from actions.kubernetes.client import (
    REQUEST_TIMEOUT,
    annotations_of,
    kube_errors,
    object_meta,
    read_deployment,
)
from actions.kubernetes.status import watch_deployment

WORKER_REPLICAS = "rollback-bot/replicas-before-stop"
MERGE_PATCH = "application/merge-patch+json"


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


def replica_count(deployment: V1Deployment) -> int:
    return int(deployment.spec.replicas or 0) if deployment.spec else 0


@dataclass(kw_only=True)
class StopWorkers:
    """Scale worker Deployments to 0, recording their replica counts first."""

    apps: AppsV1Api = field(repr=False, compare=False)
    namespace: str
    workers: tuple[str, ...]
    timeout: float = 120.0
    name: str = field(default="kubernetes.stop_workers", init=False)
    idempotent: bool = field(default=True, init=False)

    def describe(self) -> str:
        """Name the workers and what happens to their replica counts."""
        names = ", ".join(f"deployment/{w}" for w in self.workers)
        return (
            f"Stop workers {names} in {self.namespace}: record their replica counts, "
            "scale them to 0 and wait until none is left"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Record each count (memory and annotation), scale to 0, wait for no replicas."""
        counts = {worker: self._stop(worker, ctx) for worker in self.workers}
        for worker in self.workers:
            self._wait_stopped(worker, ctx)
        lines = [f"deployment/{w}: {n} -> 0 replicas" for w, n in counts.items()]
        return StepResult(
            summary=f"stopped {len(counts)} worker deployment(s)",
            output="\n".join(lines),
            data={"replicas_before_stop": counts},
        )

    def _stop(self, worker: str, ctx: StepContext) -> int:
        deployment = read_deployment(self.apps, namespace=self.namespace, name=worker)
        recorded = _recorded(ctx.memory, self.namespace, deployment)
        count = replica_count(deployment) if recorded is None else recorded
        ctx.memory[_memory_key(self.namespace, worker)] = count
        body = {"metadata": {"annotations": {WORKER_REPLICAS: str(count)}}, "spec": {"replicas": 0}}
        _merge_patch(self.apps, namespace=self.namespace, name=worker, body=body)
        ctx.emit(f"deployment/{worker}: recorded {count} replicas, scaling to 0")
        return count

    def _wait_stopped(self, worker: str, ctx: StepContext) -> None:
        watched = watch_deployment(
            self.apps, namespace=self.namespace, name=worker, remaining=ctx.remaining
        )
        try:
            for deployment in watched:
                status = deployment.status or V1DeploymentStatus()
                observed = (status.observed_generation or 0) >= (
                    object_meta(deployment).generation or 0
                )
                if observed and not status.replicas:
                    return
                if ctx.remaining() <= 0:
                    break
        finally:
            watched.close()
        raise PermanentError(
            f"timed out waiting for deployment/{worker} in {self.namespace} to reach 0 replicas"
        )


@dataclass(kw_only=True)
class StartWorkers:
    """Scale worker Deployments back to the replica counts recorded when they were stopped."""

    apps: AppsV1Api = field(repr=False, compare=False)
    namespace: str
    workers: tuple[str, ...]
    timeout: float = 120.0
    name: str = field(default="kubernetes.start_workers", init=False)
    idempotent: bool = field(default=True, init=False)

    def describe(self) -> str:
        """Name the workers."""
        names = ", ".join(f"deployment/{w}" for w in self.workers)
        return f"Restart workers {names} in {self.namespace} at their recorded replica counts"

    def run(self, ctx: StepContext) -> StepResult:
        """Restore every worker it can, then report the ones it could not."""
        lines: list[str] = []
        failures: list[ActionError] = []
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
        body = {"metadata": {"annotations": {WORKER_REPLICAS: None}}, "spec": {"replicas": count}}
        _merge_patch(self.apps, namespace=self.namespace, name=worker, body=body)
        line = f"deployment/{worker}: scaled back to {count} replicas"
        ctx.emit(line)
        return line
