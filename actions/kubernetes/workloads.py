"""StatefulSet and DaemonSet rollback and status, as kubectl does them.

kubectl pkg/polymorphichelpers/rollback.go (StatefulSetRollbacker,
DaemonSetRollbacker) and history.go (controlledHistoryV1): the history is the
ControllerRevisions listed with the workload's selector and controlled by it
(ownerReference controller=true, same uid); revision 0 means the second
highest revision, and with one revision or none there is "no last revision to
roll back to"; a revision matching the current template is a skip
("skipped rollback (current template already matches revision N)"), anything
else is one strategic merge patch whose body is the revision's data,
`{"spec":{"template":{...,"$patch":"replace"}}}`. kubectl compares the
template byte for byte with its own re-encoding; the bot compares the two
templates as JSON with nulls and empty values dropped, which is the same
comparison for any template the API server returns.

The controllers renumber a restored revision (the equal ControllerRevision
gets the next number), so a re-run after a crash finds the approved revision
by its ControllerRevision name, kept in the step's spec.

Rollout status is kubectl's rollout_status.go (StatefulSetStatusViewer,
DaemonSetStatusViewer), rule for rule: a partitioned StatefulSet is done when
the pods at and above the partition are updated; only RollingUpdate can be
followed (OnDelete waits for a person to delete pods, and kubectl refuses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kubernetes.client import AppsV1Api, V1ControllerRevision, V1DaemonSet, V1StatefulSet

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
from actions.kubernetes.client import REQUEST_TIMEOUT, kube_errors, object_meta
from actions.kubernetes.rollout import controlled, selected
from actions.kubernetes.status import follow

Kind = Literal["statefulset", "daemonset"]
Workload = V1StatefulSet | V1DaemonSet
STRATEGIC = "application/strategic-merge-patch+json"


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        pairs = ((k, _canonical(v)) for k, v in value.items() if k != "$patch")
        return {k: v for k, v in pairs if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def read_workload(apps: AppsV1Api, kind: Kind, *, namespace: str, name: str) -> Workload:
    """GET the StatefulSet or DaemonSet."""
    with kube_errors():
        if kind == "statefulset":
            return apps.read_namespaced_stateful_set(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        return apps.read_namespaced_daemon_set(name, namespace, _request_timeout=REQUEST_TIMEOUT)


def history(apps: AppsV1Api, workload: Workload) -> list[V1ControllerRevision]:
    """The ControllerRevisions the workload controls, by revision (kubectl controlledHistoryV1)."""
    context = f"failed to retrieve history of {object_meta(workload).name}"
    listed = selected(apps.list_namespaced_controller_revision, workload, context=context)
    owned: list[V1ControllerRevision] = controlled(workload, listed)
    return sorted(owned, key=lambda r: (r.revision or 0, object_meta(r).name or ""))


def find_history(to_revision: int, revisions: list[V1ControllerRevision]) -> V1ControllerRevision:
    """kubectl's findHistory: 0 is the second highest revision; else the exact number."""
    if to_revision == 0:
        if len(revisions) <= 1:
            raise PermanentError("no last revision to roll back to")
        return revisions[-2]
    for revision in revisions:
        if revision.revision == to_revision:
            return revision
    raise PermanentError(f"unable to find specified revision {to_revision} in history")


def _data(revision: V1ControllerRevision) -> dict[str, Any]:
    data = revision.data
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise PermanentError(f"controllerrevision/{object_meta(revision).name} has no data")
    return data


def revision_template(revision: V1ControllerRevision) -> dict[str, Any]:
    """The pod template a revision restores, as JSON."""
    template = _data(revision).get("spec", {}).get("template") or {}
    return dict(template)


def workload_template(apps: AppsV1Api, workload: Workload) -> dict[str, Any]:
    """The workload's pod template as wire JSON."""
    template = workload.spec.template if workload.spec else None
    return dict(apps.api_client.sanitize_for_serialization(template) or {})


def matches(apps: AppsV1Api, workload: Workload, revision: V1ControllerRevision) -> bool:
    """Tell whether the workload already runs the revision's template."""
    return bool(
        _canonical(workload_template(apps, workload)) == _canonical(revision_template(revision))
    )


def images(template: dict[str, Any]) -> tuple[str, ...]:
    """The images of a pod template's containers."""
    return tuple(
        str(c.get("image", "")) for c in (template.get("spec") or {}).get("containers") or []
    )


@dataclass(frozen=True)
class WorkloadRevision:
    """One entry of a StatefulSet's or DaemonSet's history."""

    number: int
    name: str
    images: tuple[str, ...]
    created_at: datetime | None
    is_current: bool


def workload_history(
    apps: AppsV1Api, kind: Kind, *, namespace: str, name: str
) -> list[WorkloadRevision]:
    """The revisions, newest first, the one the workload's template equals marked current."""
    workload = read_workload(apps, kind, namespace=namespace, name=name)
    entries = [
        WorkloadRevision(
            number=int(r.revision or 0),
            name=object_meta(r).name or "",
            images=images(revision_template(r)),
            created_at=object_meta(r).creation_timestamp,
            is_current=matches(apps, workload, r),
        )
        for r in history(apps, workload)
    ]
    return sorted(entries, key=lambda e: e.number, reverse=True)


def _patch(
    apps: AppsV1Api,
    kind: Kind,
    workload: Workload,
    body: dict[str, Any],
    number: int,
    *,
    dry_run: bool = False,
) -> None:
    meta = object_meta(workload)
    with kube_errors(f"failed restoring revision {number}"):
        patch = (
            apps.patch_namespaced_stateful_set
            if kind == "statefulset"
            else apps.patch_namespaced_daemon_set
        )
        patch(
            meta.name or "",
            meta.namespace or "",
            body,
            dry_run="All" if dry_run else None,
            _content_type=STRATEGIC,
            _request_timeout=REQUEST_TIMEOUT,
        )


def dry_run_undo(
    apps: AppsV1Api, kind: Kind, workload: Workload, revision: V1ControllerRevision
) -> None:
    """Send the undo patch with dryRun=All: authorization, admission, validation; nothing stored."""
    _patch(apps, kind, workload, _data(revision), int(revision.revision or 0), dry_run=True)


def workload_undo(
    apps: AppsV1Api, kind: Kind, *, namespace: str, name: str, to_revision: int = 0
) -> str:
    """Do `kubectl rollout undo statefulset|daemonset/NAME [--to-revision=N]`; return its line."""
    if to_revision < 0:
        raise PermanentError(f"unable to find specified revision {to_revision} in history")
    workload = read_workload(apps, kind, namespace=namespace, name=name)
    target = find_history(to_revision, history(apps, workload))
    if matches(apps, workload, target):
        return (
            f"{kind}.apps/{name} skipped rollback "
            f"(current template already matches revision {to_revision})"
        )
    _patch(apps, kind, workload, _data(target), to_revision)
    return f"{kind}.apps/{name} rolled back"


# --- status --------------------------------------------------------------------------------


def _statefulset_verdict(sts: V1StatefulSet) -> tuple[str, bool]:
    spec, status, meta = sts.spec, sts.status, object_meta(sts)
    strategy = spec.update_strategy if spec else None
    if strategy is None or strategy.type != "RollingUpdate":
        raise PermanentError("rollout status is only available for RollingUpdate strategy type")
    if (
        status is None
        or not status.observed_generation
        or (meta.generation or 0) > (status.observed_generation or 0)
    ):
        return "Waiting for statefulset spec update to be observed...", False
    replicas = spec.replicas if spec else None
    ready = status.ready_replicas or 0
    if replicas is not None and ready < replicas:
        return f"Waiting for {replicas - ready} pods to be ready...", False
    rolling = strategy.rolling_update
    if rolling is not None:
        updated = status.updated_replicas or 0
        if replicas is not None and rolling.partition is not None:
            wanted = replicas - rolling.partition
            if updated < wanted:
                return (
                    f"Waiting for partitioned roll out to finish: {updated} out of {wanted} "
                    "new pods have been updated...",
                    False,
                )
        return f"partitioned roll out complete: {updated} new pods have been updated...", True
    if status.update_revision != status.current_revision:
        return (
            f"waiting for statefulset rolling update to complete {status.updated_replicas or 0} "
            f"pods at revision {status.update_revision}...",
            False,
        )
    return (
        f"statefulset rolling update complete {status.current_replicas or 0} pods at revision "
        f"{status.current_revision}...",
        True,
    )


def _daemonset_verdict(ds: V1DaemonSet) -> tuple[str, bool]:
    spec, status, meta = ds.spec, ds.status, object_meta(ds)
    strategy = spec.update_strategy if spec else None
    if strategy is None or strategy.type != "RollingUpdate":
        raise PermanentError("rollout status is only available for RollingUpdate strategy type")
    if status is None or (meta.generation or 0) > (status.observed_generation or 0):
        return "Waiting for daemon set spec update to be observed...", False
    desired, updated = status.desired_number_scheduled or 0, status.updated_number_scheduled or 0
    available = status.number_available or 0
    if updated < desired:
        return (
            f'Waiting for daemon set "{meta.name}" rollout to finish: {updated} out of {desired} '
            "new pods have been updated...",
            False,
        )
    if available < desired:
        return (
            f'Waiting for daemon set "{meta.name}" rollout to finish: {available} of {desired} '
            "updated pods are available...",
            False,
        )
    return f'daemon set "{meta.name}" successfully rolled out', True


def workload_verdict(kind: Kind, workload: Workload) -> tuple[str, bool]:
    """Judge a StatefulSet's or DaemonSet's rollout by kubectl's rules."""
    if kind == "statefulset":
        assert isinstance(workload, V1StatefulSet)
        return _statefulset_verdict(workload)
    assert isinstance(workload, V1DaemonSet)
    return _daemonset_verdict(workload)


# --- actions ---------------------------------------------------------------------------------


class WorkloadUndo(Step):
    """Roll a StatefulSet or DaemonSet back to one resolved ControllerRevision."""

    name: str = fixed("kubernetes.workload_undo")
    idempotent: bool = fixed(True)
    timeout: float = 60.0
    apps: AppsV1Api = given()
    kind: Kind
    namespace: str
    workload: str
    to_revision: int
    revision_name: str
    from_revision: int
    images: tuple[str, ...]

    def describe(self) -> str:
        """Name the workload, both revisions and the images it goes back to."""
        return (
            f"Roll back {self.kind}/{self.workload} in {self.namespace} from revision "
            f"{self.from_revision} to revision {self.to_revision} ({', '.join(self.images)})"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Patch the workload back; skip when it already runs that revision's template.

        The ControllerRevision is found by name, so a revision the controller
        renumbered after an earlier run of this step is still recognised.
        """
        workload = read_workload(self.apps, self.kind, namespace=self.namespace, name=self.workload)
        revisions = history(self.apps, workload)
        target = next((r for r in revisions if object_meta(r).name == self.revision_name), None)
        if target is None:
            raise PermanentError(
                f"controllerrevision/{self.revision_name} of {self.kind}/{self.workload} in "
                f"{self.namespace} is gone (history limit?); plan the rollback again"
            )
        if matches(self.apps, workload, target):
            return StepResult(summary=f"already at revision {self.to_revision}", skipped=True)
        current = next((r for r in revisions if matches(self.apps, workload, r)), None)
        now = int(current.revision or 0) if current is not None else 0
        if now != self.from_revision:
            raise PermanentError(
                f"{self.kind}/{self.workload} in {self.namespace} is at revision {now}, not "
                f"{self.from_revision} as approved; plan the rollback again"
            )
        _patch(self.apps, self.kind, workload, _data(target), self.to_revision)
        message = f"{self.kind}.apps/{self.workload} rolled back"
        ctx.emit(message)
        return StepResult(
            summary=f"rolled back {self.kind}/{self.workload} to revision {self.to_revision}",
            output=message,
            data={"from_revision": self.from_revision, "to_revision": self.to_revision},
        )


class WorkloadStatus(Step):
    """Wait for a StatefulSet's or DaemonSet's rollout, as `kubectl rollout status`."""

    name: str = fixed("kubernetes.workload_status")
    idempotent: bool = fixed(True)
    timeout: float = 300.0
    apps: AppsV1Api = given()
    kind: Kind
    namespace: str
    workload: str

    def describe(self) -> str:
        """Name the workload and the longest wait."""
        return (
            f"Wait for {self.kind}/{self.workload} in {self.namespace} to finish rolling out "
            f"(up to {self.timeout:g}s)"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Follow the workload until kubectl would call it rolled out."""
        lines: list[str] = []
        plural = "stateful_set" if self.kind == "statefulset" else "daemon_set"
        lister = getattr(self.apps, f"list_namespaced_{plural}")
        watched = follow(
            lister,
            namespace=self.namespace,
            name=self.workload,
            kind=self.kind,
            remaining=ctx.remaining,
        )
        try:
            for workload in watched:
                message, done = workload_verdict(self.kind, workload)
                if not lines or lines[-1] != message:
                    lines.append(message)
                    ctx.emit(message)
                if done:
                    return StepResult(summary=message, output="\n".join(lines))
                if ctx.remaining() <= 0:
                    break
        finally:
            watched.close()
        raise PermanentError(
            f"timed out waiting for {self.kind}/{self.workload} in {self.namespace} to roll out "
            f"(last: {lines[-1] if lines else 'no status seen'})"
        )
