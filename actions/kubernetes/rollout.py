"""Rollout history and undo, as kubectl does them.

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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client import AppsV1Api, V1Deployment, V1ReplicaSet

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
from actions.kubernetes.client import (
    REQUEST_TIMEOUT,
    annotations_of,
    kube_errors,
    object_meta,
    read_deployment,
)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"


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


def selector_string(workload: Any) -> str:
    """Render a workload's label selector (spec.selector) as kubectl sends it."""
    spec = getattr(workload, "spec", None)
    selector = spec.selector if spec is not None else None
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


def selected(lister: Callable[..., Any], workload: Any, *, context: str) -> list[Any]:
    """List what the workload's selector selects in its namespace (`lister`: the API's
    `list_namespaced_pod`, `list_namespaced_replica_set`, ...)."""
    with kube_errors(context):
        listing = lister(
            object_meta(workload).namespace or "default",
            label_selector=selector_string(workload),
            _request_timeout=REQUEST_TIMEOUT,
        )
    return list(listing.items)


Owned = TypeVar("Owned")


def controlled(workload: Any, found: Iterable[Owned]) -> list[Owned]:
    """Those of `found` whose controller reference is the workload (by uid)."""
    uid = object_meta(workload).uid
    return [
        item
        for item in found
        if any(r.controller and r.uid == uid for r in object_meta(item).owner_references or [])
    ]


def _owned(apps: AppsV1Api, deployment: V1Deployment) -> list[V1ReplicaSet]:
    """List the ReplicaSets the Deployment controls, oldest first (kubectl's order)."""
    context = f"failed to retrieve replica sets from deployment {object_meta(deployment).name}"
    owned = controlled(
        deployment, selected(apps.list_namespaced_replica_set, deployment, context=context)
    )
    return sorted(
        owned,
        key=lambda rs: (object_meta(rs).creation_timestamp or _EPOCH, object_meta(rs).name or ""),
    )


_EPOCH = datetime.fromtimestamp(0, UTC)


def read_with_replica_sets(
    apps: AppsV1Api, *, namespace: str, name: str
) -> tuple[V1Deployment, list[V1ReplicaSet]]:
    deployment = read_deployment(apps, namespace=namespace, name=name)
    return deployment, _owned(apps, deployment)


def revision_of(rs: V1ReplicaSet | V1Deployment) -> int | None:
    """Read the revision annotation: 0 when absent, None when unparsable (kubectl skips those)."""
    value = annotations_of(rs).get(REVISION)
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


def same_template(a: V1Deployment | V1ReplicaSet, b: V1Deployment | V1ReplicaSet) -> bool:
    return bool(_canonical(_template(a)) == _canonical(_template(b)))


def current_replica_set(deployment: V1Deployment, owned: list[V1ReplicaSet]) -> V1ReplicaSet | None:
    """Return the ReplicaSet running the Deployment's template (the oldest, like the controller)."""
    return next((rs for rs in owned if same_template(rs, deployment)), None)


def images_of(obj: V1Deployment | V1ReplicaSet) -> tuple[str, ...]:
    containers = _template(obj).get("spec", {}).get("containers") or []
    return tuple(str(c.get("image", "")) for c in containers)


def _revision_not_found(number: int) -> PermanentError:
    return PermanentError(f"unable to find specified revision {number} in history")


def find_revision(
    deployment: V1Deployment, owned: list[V1ReplicaSet], to_revision: int
) -> V1ReplicaSet:
    """Pick the ReplicaSet for `to_revision` exactly as kubectl's deploymentRevision does."""
    current = current_replica_set(deployment, owned)
    ordered = [rs for rs in owned if rs is not current] + ([current] if current else [])
    latest: tuple[int, V1ReplicaSet | None] = (-1, None)
    previous: tuple[int, V1ReplicaSet | None] = (-1, None)
    for rs in ordered:
        number = revision_of(rs)
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
        raise PermanentError(
            f'no rollout history found for deployment "{object_meta(deployment).name}"'
        )
    return previous[1]


def find_revision_or_renumbered(
    deployment: V1Deployment, owned: list[V1ReplicaSet], number: int
) -> V1ReplicaSet:
    """Find revision `number`, or the ReplicaSet it became after a rollback renumbered it.

    The controller gives a restored ReplicaSet the next revision and records the
    old one in its revision-history annotation, so a step re-run after a crash
    still finds what it already restored.
    """
    try:
        return find_revision(deployment, owned, number)
    except PermanentError:
        for rs in owned:
            if str(number) in annotations_of(rs).get(REVISION_HISTORY, "").split(","):
                return rs
        raise


@dataclass(frozen=True)
class Revision:
    """One entry of a Deployment's rollout history."""

    number: int
    images: tuple[str, ...]
    change_cause: str | None
    created_at: datetime | None
    is_current: bool
    ready: int = 0
    """Pods of this revision that are ready (its ReplicaSet's status.readyReplicas)."""


def _as_revision(rs: V1ReplicaSet, *, current: V1ReplicaSet | None) -> Revision:
    return Revision(
        number=revision_of(rs) or 0,
        images=images_of(rs),
        change_cause=annotations_of(rs).get(CHANGE_CAUSE),
        created_at=object_meta(rs).creation_timestamp,
        is_current=rs is current,
        ready=(rs.status.ready_replicas or 0) if rs.status is not None else 0,
    )


def serving(deployment: V1Deployment, history: list[Revision]) -> str:
    """What is not ready yet, in words ('' when the current revision's pods all are).

    A version runs only when its pods are ready: the template alone says what the
    Deployment wants, not what serves (ReplicaSet status.readyReplicas, as
    `kubectl get rs` shows it).
    """
    desired = deployment.spec.replicas if deployment.spec and deployment.spec.replicas else 0
    current = next((r for r in history if r.is_current), None)
    if current is None or current.ready >= desired:
        return ""
    others = sum(r.ready for r in history if not r.is_current)
    said = f"only {current.ready} of its {desired} pods ready"
    if others:
        said += f"; {others} pods of older revisions still ready and serving"
    return said


def rollout_history(apps: AppsV1Api, *, namespace: str, name: str) -> list[Revision]:
    """List the Deployment's revisions, newest first, from the ReplicaSets it controls."""
    return history_of(*read_with_replica_sets(apps, namespace=namespace, name=name))


def history_of(deployment: V1Deployment, owned: list[V1ReplicaSet]) -> list[Revision]:
    """The revisions of a Deployment already read with its ReplicaSets, newest first."""
    current = current_replica_set(deployment, owned)
    revisions = [_as_revision(rs, current=current) for rs in owned if (revision_of(rs) or 0) > 0]
    return sorted(revisions, key=lambda r: r.number, reverse=True)


def undo_patch(deployment: V1Deployment, target: V1ReplicaSet) -> list[dict[str, Any]]:
    """kubectl's undo patch: replace spec.template and metadata.annotations (JSON patch)."""
    annotations = {k: v for k, v in annotations_of(deployment).items() if k in KEPT_FROM_DEPLOYMENT}
    annotations.update(
        {k: v for k, v in annotations_of(target).items() if k not in KEPT_FROM_DEPLOYMENT}
    )
    template = _template(target)
    if not (template.get("metadata") or {}).get("labels"):
        template.get("metadata", {}).pop("labels", None)
    return [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]


def _restore(
    apps: AppsV1Api, deployment: V1Deployment, target: V1ReplicaSet, to_revision: int
) -> str:
    """Patch `deployment` back to `target`'s template; return kubectl's message."""
    meta = object_meta(deployment)
    if deployment.spec is not None and deployment.spec.paused:
        raise PermanentError(PAUSED)
    if same_template(target, deployment):
        return (
            f"deployment.apps/{meta.name} skipped rollback "
            f"(current template already matches revision {to_revision})"
        )
    patch = undo_patch(deployment, target)
    with kube_errors(f"failed restoring revision {to_revision}"):
        apps.patch_namespaced_deployment(
            meta.name or "", meta.namespace or "", patch, _request_timeout=REQUEST_TIMEOUT
        )
    return f"deployment.apps/{meta.name} rolled back"


def rollout_undo(apps: AppsV1Api, *, namespace: str, name: str, to_revision: int = 0) -> str:
    """Do `kubectl rollout undo deployment/NAME [--to-revision=N]`; return kubectl's message."""
    if to_revision < 0:
        raise _revision_not_found(to_revision)
    deployment, owned = read_with_replica_sets(apps, namespace=namespace, name=name)
    target = find_revision(deployment, owned, to_revision)
    return _restore(apps, deployment, target, to_revision)


class RolloutUndo(Step):
    """Roll a Deployment back to one resolved revision, as `kubectl rollout undo --to-revision`."""

    name: str = fixed("kubernetes.rollout_undo")
    idempotent: bool = fixed(True)
    timeout: float = 60.0
    apps: AppsV1Api = given()
    namespace: str
    deployment: str
    to_revision: int
    from_revision: int
    images: tuple[str, ...]

    def describe(self) -> str:
        """Name the Deployment, both revisions and the images it goes back to."""
        return (
            f"Roll back deployment/{self.deployment} in {self.namespace} from revision "
            f"{self.from_revision} to revision {self.to_revision} ({', '.join(self.images)})"
        )

    def label(self) -> str:
        """`Roll back voxflow-api to rev 3 (voxflow/api:v1.2.3)`."""
        return f"Roll back {self.deployment} to rev {self.to_revision} ({', '.join(self.images)})"

    def run(self, ctx: StepContext) -> StepResult:
        """Patch the Deployment back; skip when it already runs that revision's template.

        "Already done" is found after the controller renumbered the restored
        revision (its old number is in revision-history), and only if that
        ReplicaSet still runs the approved images.
        """
        deployment, owned = read_with_replica_sets(
            self.apps, namespace=self.namespace, name=self.deployment
        )
        target = find_revision_or_renumbered(deployment, owned, self.to_revision)
        if images_of(target) != tuple(self.images):
            raise PermanentError(
                f"revision {self.to_revision} of deployment/{self.deployment} in {self.namespace} "
                f"runs {', '.join(images_of(target))}, not {', '.join(self.images)} as approved; "
                "plan the rollback again"
            )
        if deployment.spec is not None and deployment.spec.paused:
            raise PermanentError(PAUSED)
        if same_template(target, deployment):
            return StepResult(summary=f"already at revision {self.to_revision}", skipped=True)
        current = current_replica_set(deployment, owned)
        now = revision_of(current) if current is not None else revision_of(deployment)
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
