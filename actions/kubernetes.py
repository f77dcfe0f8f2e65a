"""Kubernetes application rollback: rollout history, undo, status, worker scaling.

Undo copies kubectl's `rollout undo` (kubectl pkg/polymorphichelpers/rollback.go)
rather than reinventing it, so the bot and a person at a terminal do the same
thing: revisions come from the ReplicaSets the Deployment controls
(ownerReference controller=true with its uid, listed by its selector); revision
0 means the one before the newest; the template is compared ignoring
pod-template-hash (nil and empty count as equal, as in Go's semantic
equality); the change is one JSON patch replacing `spec.template` and
`metadata.annotations`, where the annotations kubectl keeps from the
Deployment (revision, last-applied, ...) are kept and every other one comes
from the ReplicaSet. Messages are kubectl's, word for word; a golden test runs
both against the sandbox's fake API server and compares. The undo step is safe
to re-run after a crash: the controller renumbers a restored revision but keeps
its old number in revision-history, so the step finds it and reports a skip.

Rollout status follows kubectl's order of checks (observed generation, progress
deadline, updated, old pending, available) and is driven by a watch on the one
Deployment, re-listed when the watch ends, never by sleeping.

Workers are stopped by scaling to 0 after recording the replica count twice:
in the step's durable memory and as an annotation on the worker Deployment,
written in the same merge patch that scales it, so a crash anywhere leaves the
count somewhere and a second stop never records 0 over it.

Only the official client is used; every API failure becomes a TemporaryError
(5xx, 429, connection) or a PermanentError (other 4xx), so the runner knows
whether to retry.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Generator, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    V1Deployment,
    V1DeploymentStatus,
    V1ObjectMeta,
    V1ReplicaSet,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch import Watch

from actions.base import (
    ActionError,
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    StepContext,
    StepResult,
    TargetPlan,
    TemporaryError,
)
from actions.params import Strict


class KubeConnection(Strict):
    """In-cluster service account, or a kubeconfig file with an optional context."""

    mode: Literal["in-cluster", "kubeconfig"] = "kubeconfig"
    kubeconfig: str | None = None
    context: str | None = None


class KubernetesParams(Strict):
    """A Deployment to roll back and the worker Deployments stopped meanwhile."""

    kind: Literal["kubernetes"]
    namespace: str
    deployment: str
    workers: list[str] = []
    connection: KubeConnection = KubeConnection()
    rollout_timeout: float = 300.0


REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"
WORKER_REPLICAS = "rollback-bot/replicas-before-stop"
# kubectl's annotationsToSkip: kept from the Deployment, never copied from the ReplicaSet.
KEPT_FROM_DEPLOYMENT = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
PAUSED = (
    "you cannot rollback a paused deployment; resume it first with "
    "'kubectl rollout resume' and try again"
)
REQUEST_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"


def api_client(conn: KubeConnection) -> ApiClient:
    """Build a fresh ApiClient for `conn` (in-cluster, or kubeconfig and context); no globals."""
    configuration = Configuration()
    try:
        if conn.mode == "in-cluster":
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(
                config_file=conn.kubeconfig,
                context=conn.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        raise PermanentError(f"cannot load the Kubernetes connection ({conn.mode}): {exc}") from exc
    return ApiClient(configuration)


# --- errors -----------------------------------------------------------------------------------


def _status_text(exc: ApiException) -> tuple[str, str]:
    """Return (reason, message) from the Status body the API server sent, if any."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body.get("reason") or exc.reason or "Unknown"), str(body["message"])
    return str(exc.reason or "Unknown"), str(exc.body or exc.reason or "no details")


def _retry_after(exc: ApiException) -> float:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    return float(value) if value and str(value).isdigit() else 2.0


def _api_error(exc: ApiException, context: str | None) -> ActionError:
    """Word an API error as kubectl does; 5xx and 429 are temporary, other codes permanent."""
    reason, message = _status_text(exc)
    text = f"{context}: {message}" if context else f"Error from server ({reason}): {message}"
    status = exc.status or 0
    if status >= 500 or status == 429:
        return TemporaryError(text, delay=_retry_after(exc))
    return PermanentError(text)


@contextmanager
def _kube_errors(context: str | None = None) -> Iterator[None]:
    """Turn client failures into TemporaryError (5xx, 429, network) or PermanentError (4xx)."""
    try:
        yield
    except ApiException as exc:
        raise _api_error(exc, context) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
        where = context or "Kubernetes API"
        raise TemporaryError(f"{where}: cannot reach the API server: {exc}", delay=2.0) from exc
    except ValueError as exc:
        raise PermanentError(f"{context or 'Kubernetes API'}: unexpected answer: {exc}") from exc


# --- reading a Deployment and its ReplicaSets -------------------------------------------------


def _meta(obj: V1Deployment | V1ReplicaSet) -> V1ObjectMeta:
    if obj.metadata is None:
        raise PermanentError("the API server returned an object without metadata")
    return obj.metadata


def _annotations(obj: V1Deployment | V1ReplicaSet) -> dict[str, str]:
    return dict(_meta(obj).annotations or {})


def _selector_string(deployment: V1Deployment) -> str:
    """Render the Deployment's label selector as kubectl sends it."""
    selector = deployment.spec.selector if deployment.spec else None
    if selector is None:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or []:
        values = ",".join(sorted(expr.values or []))
        parts.append(
            {
                "In": f"{expr.key} in ({values})",
                "NotIn": f"{expr.key} notin ({values})",
                "Exists": expr.key,
                "DoesNotExist": f"!{expr.key}",
            }[expr.operator]
        )
    return ",".join(parts)


def _read(apps: AppsV1Api, *, namespace: str, name: str) -> V1Deployment:
    with _kube_errors():
        return apps.read_namespaced_deployment(name, namespace, _request_timeout=REQUEST_TIMEOUT)


def _owned(apps: AppsV1Api, deployment: V1Deployment) -> list[V1ReplicaSet]:
    """List the ReplicaSets the Deployment controls, oldest first (kubectl's order)."""
    meta = _meta(deployment)
    context = f"failed to retrieve replica sets from deployment {meta.name}"
    with _kube_errors(context):
        listing = apps.list_namespaced_replica_set(
            meta.namespace or "default",
            label_selector=_selector_string(deployment),
            _request_timeout=REQUEST_TIMEOUT,
        )
    owned = [
        rs
        for rs in listing.items
        if any(ref.controller and ref.uid == meta.uid for ref in _meta(rs).owner_references or [])
    ]
    return sorted(
        owned, key=lambda rs: (_meta(rs).creation_timestamp or _EPOCH, _meta(rs).name or "")
    )


_EPOCH = datetime.fromtimestamp(0, UTC)


def _load(apps: AppsV1Api, *, namespace: str, name: str) -> tuple[V1Deployment, list[V1ReplicaSet]]:
    deployment = _read(apps, namespace=namespace, name=name)
    return deployment, _owned(apps, deployment)


def _revision(rs: V1ReplicaSet | V1Deployment) -> int | None:
    """Read the revision annotation: 0 when absent, None when unparsable (kubectl skips those)."""
    value = _annotations(rs).get(REVISION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def _canonical(value: Any) -> Any:
    """Drop nulls and empty maps/lists, so equality matches Go's semantic DeepEqual."""
    if isinstance(value, dict):
        pairs = ((k, _canonical(v)) for k, v in value.items())
        return {k: v for k, v in pairs if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _template(obj: V1Deployment | V1ReplicaSet) -> dict[str, Any]:
    """Return the pod template as wire JSON (camelCase), without pod-template-hash."""
    template = obj.spec.template if obj.spec else None
    data: dict[str, Any] = json.loads(template.to_json()) if template is not None else {}
    labels = (data.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return data


def _same_template(a: V1Deployment | V1ReplicaSet, b: V1Deployment | V1ReplicaSet) -> bool:
    return bool(_canonical(_template(a)) == _canonical(_template(b)))


def _current(deployment: V1Deployment, owned: list[V1ReplicaSet]) -> V1ReplicaSet | None:
    """Return the ReplicaSet running the Deployment's template (the oldest, like the controller)."""
    return next((rs for rs in owned if _same_template(rs, deployment)), None)


def _images(obj: V1Deployment | V1ReplicaSet) -> tuple[str, ...]:
    containers = _template(obj).get("spec", {}).get("containers") or []
    return tuple(str(c.get("image", "")) for c in containers)


def _revision_not_found(number: int) -> PermanentError:
    return PermanentError(f"unable to find specified revision {number} in history")


def _find_revision(
    deployment: V1Deployment, owned: list[V1ReplicaSet], to_revision: int
) -> V1ReplicaSet:
    """Pick the ReplicaSet for `to_revision` exactly as kubectl's deploymentRevision does."""
    current = _current(deployment, owned)
    ordered = [rs for rs in owned if rs is not current] + ([current] if current else [])
    latest: tuple[int, V1ReplicaSet | None] = (-1, None)
    previous: tuple[int, V1ReplicaSet | None] = (-1, None)
    for rs in ordered:
        number = _revision(rs)
        if number is None:
            continue
        if to_revision == 0:
            if latest[0] < number:
                previous, latest = latest, (number, rs)
            elif previous[0] < number:
                previous = (number, rs)
        elif to_revision == number:
            return rs
    if to_revision > 0:
        raise _revision_not_found(to_revision)
    if previous[1] is None:
        raise PermanentError(f'no rollout history found for deployment "{_meta(deployment).name}"')
    return previous[1]


def _find_revision_or_renumbered(
    deployment: V1Deployment, owned: list[V1ReplicaSet], number: int
) -> V1ReplicaSet:
    """Find revision `number`, or the ReplicaSet it became after a rollback renumbered it.

    The controller gives a restored ReplicaSet the next revision and records the
    old one in its revision-history annotation, so a step re-run after a crash
    still finds what it already restored.
    """
    try:
        return _find_revision(deployment, owned, number)
    except PermanentError:
        for rs in owned:
            if str(number) in _annotations(rs).get(REVISION_HISTORY, "").split(","):
                return rs
        raise


# --- history and undo ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """One entry of a Deployment's rollout history."""

    number: int
    images: tuple[str, ...]
    change_cause: str | None
    created_at: datetime | None
    is_current: bool


def _as_revision(rs: V1ReplicaSet, *, current: V1ReplicaSet | None) -> Revision:
    return Revision(
        number=_revision(rs) or 0,
        images=_images(rs),
        change_cause=_annotations(rs).get(CHANGE_CAUSE),
        created_at=_meta(rs).creation_timestamp,
        is_current=rs is current,
    )


def rollout_history(apps: AppsV1Api, *, namespace: str, name: str) -> list[Revision]:
    """List the Deployment's revisions, newest first, from the ReplicaSets it controls."""
    deployment, owned = _load(apps, namespace=namespace, name=name)
    current = _current(deployment, owned)
    revisions = [_as_revision(rs, current=current) for rs in owned if (_revision(rs) or 0) > 0]
    return sorted(revisions, key=lambda r: r.number, reverse=True)


def _restore(
    apps: AppsV1Api, deployment: V1Deployment, target: V1ReplicaSet, to_revision: int
) -> str:
    """Patch `deployment` back to `target`'s template; return kubectl's message."""
    meta = _meta(deployment)
    if deployment.spec is not None and deployment.spec.paused:
        raise PermanentError(PAUSED)
    if _same_template(target, deployment):
        return (
            f"deployment.apps/{meta.name} skipped rollback "
            f"(current template already matches revision {to_revision})"
        )
    annotations = {k: v for k, v in _annotations(deployment).items() if k in KEPT_FROM_DEPLOYMENT}
    annotations.update(
        {k: v for k, v in _annotations(target).items() if k not in KEPT_FROM_DEPLOYMENT}
    )
    template = _template(target)
    if not (template.get("metadata") or {}).get("labels"):
        template.get("metadata", {}).pop("labels", None)
    patch = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]
    with _kube_errors(f"failed restoring revision {to_revision}"):
        apps.patch_namespaced_deployment(
            meta.name or "", meta.namespace or "", patch, _request_timeout=REQUEST_TIMEOUT
        )
    return f"deployment.apps/{meta.name} rolled back"


def rollout_undo(apps: AppsV1Api, *, namespace: str, name: str, to_revision: int = 0) -> str:
    """Do `kubectl rollout undo deployment/NAME [--to-revision=N]`; return kubectl's message."""
    if to_revision < 0:
        raise _revision_not_found(to_revision)
    deployment, owned = _load(apps, namespace=namespace, name=name)
    target = _find_revision(deployment, owned, to_revision)
    return _restore(apps, deployment, target, to_revision)


# --- rollout status ---------------------------------------------------------------------------


def rollout_verdict(deployment: V1Deployment) -> tuple[str, bool]:
    """Judge a rollout in kubectl's order; return a progress line and whether it is done."""
    name = _meta(deployment).name
    status = deployment.status or V1DeploymentStatus()
    if (_meta(deployment).generation or 0) > (status.observed_generation or 0):
        return "waiting for the controller to observe the new template", False
    progressing = next((c for c in status.conditions or [] if c.type == "Progressing"), None)
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        raise PermanentError(f'deployment "{name}" exceeded its progress deadline')
    desired = deployment.spec.replicas if deployment.spec else None
    updated, total = status.updated_replicas or 0, status.replicas or 0
    available = status.available_replicas or 0
    if desired is not None and updated < desired:
        return f"{updated} of {desired} new replicas updated", False
    if total > updated:
        return f"{total - updated} old replicas pending termination", False
    if available < updated:
        return f"{available} of {updated} new replicas available", False
    return f'deployment "{name}" successfully rolled out', True


def _watch_deployment(
    apps: AppsV1Api, *, namespace: str, name: str, remaining: Callable[[], float]
) -> Generator[V1Deployment, None, None]:
    """Yield the Deployment now and after each change, until `remaining()` runs out."""
    selector = f"metadata.name={name}"
    while remaining() > 0:
        with _kube_errors():
            listing = apps.list_namespaced_deployment(
                namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        if not listing.items:
            raise PermanentError(
                f'Error from server (NotFound): deployments.apps "{name}" not found'
            )
        yield listing.items[0]
        version = listing.metadata.resource_version if listing.metadata else None
        ended_cleanly = yield from _follow(
            apps, namespace=namespace, selector=selector, version=version, remaining=remaining
        )
        if not ended_cleanly:
            time.sleep(min(1.0, remaining()))  # back off before listing again after a broken watch


def _follow(
    apps: AppsV1Api,
    *,
    namespace: str,
    selector: str,
    version: str | None,
    remaining: Callable[[], float],
) -> Generator[V1Deployment, None, bool]:
    """Yield each change after `version`; return False if the watch broke rather than ended."""
    watch = Watch()
    stream = watch.stream(
        apps.list_namespaced_deployment,
        namespace,
        field_selector=selector,
        resource_version=version,
        timeout_seconds=max(1, math.ceil(remaining())),
        _request_timeout=(REQUEST_TIMEOUT, max(0.1, remaining())),
    )
    try:
        for event in stream:
            if not isinstance(event, dict):
                continue  # a line the client could not decode
            if event["type"] == "DELETED":
                raise PermanentError(f"deployment/{_meta(event['object']).name} was deleted")
            yield event["object"]
            if remaining() <= 0:
                return True
    except ApiException as exc:
        if exc.status != 410:
            raise _api_error(exc, None) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError):
        return remaining() <= 0
    finally:
        watch.stop()
        stream.close()
    return True


# --- workers ----------------------------------------------------------------------------------


def _memory_key(namespace: str, worker: str) -> str:
    return f"kubernetes/{namespace}/{worker}/replicas-before-stop"


def _recorded(memory: MutableMapping[str, Any], namespace: str, worker: V1Deployment) -> int | None:
    """Return the replica count recorded before a stop: memory first, then the annotation."""
    name = _meta(worker).name or ""
    if isinstance(memory.get(_memory_key(namespace, name)), int):
        return int(memory[_memory_key(namespace, name)])
    value = _annotations(worker).get(WORKER_REPLICAS, "")
    return int(value) if value.isdigit() else None


def _merge_patch(apps: AppsV1Api, *, namespace: str, name: str, body: dict[str, Any]) -> None:
    with _kube_errors(f"deployment/{name} in {namespace}"):
        apps.patch_namespaced_deployment(
            name, namespace, body, _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT
        )


def _replicas(deployment: V1Deployment) -> int:
    return int(deployment.spec.replicas or 0) if deployment.spec else 0


# --- actions ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RolloutUndo:
    """Roll a Deployment back to one resolved revision, as `kubectl rollout undo --to-revision`."""

    apps: AppsV1Api = field(repr=False, compare=False)
    namespace: str
    deployment: str
    to_revision: int
    from_revision: int
    images: tuple[str, ...]
    timeout: float = 60.0
    name: str = field(default="kubernetes.rollout_undo", init=False)
    idempotent: bool = field(default=True, init=False)

    def describe(self) -> str:
        """Name the Deployment, both revisions and the images it goes back to."""
        return (
            f"Roll back deployment/{self.deployment} in {self.namespace} from revision "
            f"{self.from_revision} to revision {self.to_revision} ({', '.join(self.images)})"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Patch the Deployment back; skip when it already runs that revision's template."""
        deployment, owned = _load(self.apps, namespace=self.namespace, name=self.deployment)
        target = _find_revision_or_renumbered(deployment, owned, self.to_revision)
        if deployment.spec is not None and deployment.spec.paused:
            raise PermanentError(PAUSED)
        if _same_template(target, deployment):
            return StepResult(
                summary=f"skipped: already at revision {self.to_revision}", skipped=True
            )
        current = _current(deployment, owned)
        now = _revision(current) if current is not None else _revision(deployment)
        if now != self.from_revision:
            raise PermanentError(
                f"deployment/{self.deployment} in {self.namespace} is at revision {now}, not "
                f"{self.from_revision} as approved; plan the rollback again"
            )
        message = _restore(self.apps, deployment, target, self.to_revision)
        ctx.emit(message)
        return StepResult(
            summary=f"rolled back deployment/{self.deployment} to revision {self.to_revision}",
            output=message,
            data={
                "from_revision": self.from_revision,
                "to_revision": self.to_revision,
                "images": list(self.images),
            },
        )


@dataclass(kw_only=True)
class RolloutStatus:
    """Wait for a Deployment's rollout to complete, as `kubectl rollout status`."""

    apps: AppsV1Api = field(repr=False, compare=False)
    namespace: str
    deployment: str
    timeout: float = 300.0
    name: str = field(default="kubernetes.rollout_status", init=False)
    idempotent: bool = field(default=True, init=False)

    def describe(self) -> str:
        """Name the Deployment and the longest wait."""
        return (
            f"Wait for deployment/{self.deployment} in {self.namespace} to finish rolling out "
            f"(up to {self.timeout:g}s)"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Follow the Deployment until complete; fail on its progress deadline or ours."""
        lines: list[str] = []
        watched = _watch_deployment(
            self.apps, namespace=self.namespace, name=self.deployment, remaining=ctx.remaining
        )
        try:
            for deployment in watched:
                message, done = rollout_verdict(deployment)
                if not lines or lines[-1] != message:
                    lines.append(message)
                    ctx.emit(message)
                if done:
                    return StepResult(summary=message, output="\n".join(lines))
                if ctx.remaining() <= 0:
                    break
        finally:
            watched.close()
        last = lines[-1] if lines else "no status seen"
        raise PermanentError(
            f"timed out waiting for deployment/{self.deployment} in {self.namespace} to roll out "
            f"(last: {last})"
        )


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
        deployment = _read(self.apps, namespace=self.namespace, name=worker)
        recorded = _recorded(ctx.memory, self.namespace, deployment)
        count = _replicas(deployment) if recorded is None else recorded
        ctx.memory[_memory_key(self.namespace, worker)] = count
        body = {"metadata": {"annotations": {WORKER_REPLICAS: str(count)}}, "spec": {"replicas": 0}}
        _merge_patch(self.apps, namespace=self.namespace, name=worker, body=body)
        ctx.emit(f"deployment/{worker}: recorded {count} replicas, scaling to 0")
        return count

    def _wait_stopped(self, worker: str, ctx: StepContext) -> None:
        watched = _watch_deployment(
            self.apps, namespace=self.namespace, name=worker, remaining=ctx.remaining
        )
        try:
            for deployment in watched:
                status = deployment.status or V1DeploymentStatus()
                observed = (status.observed_generation or 0) >= (_meta(deployment).generation or 0)
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
        deployment = _read(self.apps, namespace=self.namespace, name=worker)
        count = _recorded(ctx.memory, self.namespace, deployment)
        if count is None:
            if _replicas(deployment) > 0:
                left = _replicas(deployment)
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


# --- the target ------------------------------------------------------------------------------


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "age unknown"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _parse_ref(ref: str | None) -> int:
    text = (ref or "0").strip().removeprefix("rev").strip()
    if not text.isdigit():
        raise PlanningError(f"{ref!r} is not a revision number")
    return int(text)


class KubernetesTarget:
    """A Deployment that can be rolled back to an earlier revision, with its workers."""

    def __init__(self, params: KubernetesParams, *, api: ApiClient | None = None) -> None:
        self.params = params
        self._api = api

    @property
    def apps(self) -> AppsV1Api:
        """The apps/v1 API, connecting on first use."""
        if self._api is None:
            self._api = api_client(self.params.connection)
        return AppsV1Api(self._api)

    def points(self) -> list[RollbackPoint]:
        """List revisions newest first, the running one marked."""
        history = rollout_history(
            self.apps, namespace=self.params.namespace, name=self.params.deployment
        )
        now = datetime.now(UTC)
        return [
            RollbackPoint(
                ref=str(r.number),
                label=" · ".join(
                    [f"rev {r.number}", ", ".join(r.images), _ago(r.created_at, now)]
                    + (["current"] if r.is_current else [])
                ),
                created_at=r.created_at,
                is_current=r.is_current,
            )
            for r in history
        ]

    def checks(self, ref: str | None) -> list[Check]:
        """Check the revision exists and differs, the Deployment is not paused, workers exist."""
        try:
            deployment, owned = _load(
                self.apps, namespace=self.params.namespace, name=self.params.deployment
            )
        except ActionError as exc:
            return [Check("deployment found", False, str(exc))]
        paused = bool(deployment.spec and deployment.spec.paused)
        return [
            self._revision_check(deployment, owned, ref),
            Check("deployment not paused", not paused, PAUSED if paused else "not paused"),
            self._workers_check(),
        ]

    def _revision_check(
        self, deployment: V1Deployment, owned: list[V1ReplicaSet], ref: str | None
    ) -> Check:
        name = "rollback revision exists"
        try:
            target = _find_revision(deployment, owned, _parse_ref(ref))
        except ActionError as exc:
            return Check(name, False, str(exc))
        number = _revision(target)
        if _same_template(target, deployment):
            return Check(name, False, f"revision {number} is what the deployment already runs")
        return Check(name, True, f"revision {number}: {', '.join(_images(target))}")

    def _workers_check(self) -> Check:
        found, missing = [], []
        for worker in self.params.workers:
            try:
                deployment = _read(self.apps, namespace=self.params.namespace, name=worker)
                found.append(f"{worker} ({_replicas(deployment)} replicas)")
            except ActionError as exc:
                missing.append(f"{worker}: {exc}")
        if not self.params.workers:
            return Check("workers found", True, "no worker deployments configured")
        return Check("workers found", not missing, "; ".join(missing or found))

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Resolve `ref` (None or "0": the previous revision) into the undo and its companions.

        `force` plans even when the Deployment already runs that revision
        (the undo then skips) and drops missing workers instead of refusing.
        """
        p = self.params
        try:
            deployment, owned = _load(self.apps, namespace=p.namespace, name=p.deployment)
            target = _find_revision(deployment, owned, _parse_ref(ref))
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        if deployment.spec is not None and deployment.spec.paused:
            raise PlanningError(PAUSED)
        to = _revision(target) or 0
        if _same_template(target, deployment) and not force:
            raise PlanningError(
                f"deployment/{p.deployment} in {p.namespace} already runs revision {to}"
            )
        current = _current(deployment, owned)
        undo = RolloutUndo(
            apps=self.apps,
            namespace=p.namespace,
            deployment=p.deployment,
            to_revision=to,
            from_revision=(_revision(current) if current is not None else _revision(deployment))
            or 0,
            images=_images(target),
        )
        return self._assemble(undo, force=force)

    def _assemble(self, undo: RolloutUndo, *, force: bool) -> TargetPlan:
        p = self.params
        workers, notes = self._usable_workers(force=force)
        notes.append(
            f"Kubernetes renumbers the restored revision: after the rollback, revision "
            f"{undo.to_revision} is listed under the next revision number."
        )
        status = RolloutStatus(
            apps=self.apps,
            namespace=p.namespace,
            deployment=p.deployment,
            timeout=p.rollout_timeout,
        )
        stop = (
            [StopWorkers(apps=self.apps, namespace=p.namespace, workers=workers)] if workers else []
        )
        start = (
            [StartWorkers(apps=self.apps, namespace=p.namespace, workers=workers)]
            if workers
            else []
        )
        return TargetPlan(
            prepare=list(stop), rollback=[undo], verify=[status], resume=list(start), notes=notes
        )

    def _usable_workers(self, *, force: bool) -> tuple[tuple[str, ...], list[str]]:
        usable, notes = [], []
        for worker in self.params.workers:
            try:
                _read(self.apps, namespace=self.params.namespace, name=worker)
                usable.append(worker)
            except PermanentError as exc:
                if not force:
                    raise PlanningError(f"worker deployment/{worker}: {exc}") from exc
                notes.append(f"worker deployment/{worker} left out: {exc}")
            except TemporaryError as exc:
                raise PlanningError(f"worker deployment/{worker}: {exc}") from exc
        return tuple(usable), notes
