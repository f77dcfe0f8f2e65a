"""A StatefulSet or DaemonSet as a rollback target: its revisions are ControllerRevisions.

It must use the RollingUpdate strategy: with OnDelete the undo would change the template
and no pod, so planning refuses. A StatefulSet partition is respected (pods below it keep
their revision) and named in the plan. An OrderedReady StatefulSet's undo is followed by
its forced rollback (forced.py): the pods stuck on the bad revision are deleted, as the
plan says. The rest of the plan (owners held, workers stopped, status) is the target's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kubernetes.client import V1ControllerRevision, V1StatefulSet

from actions.base import Action, ActionError, Check, PlanningError, RollbackPoint, TargetPlan
from actions.kubernetes.client import object_meta
from actions.kubernetes.forced import ForcedRollback, needs_forcing
from actions.kubernetes.revisions import parse_revision, revision_point
from actions.kubernetes.workloads import (
    Kind,
    Workload,
    WorkloadUndo,
    find_history,
    history,
    matches,
    read_workload,
    revision_template,
    workload_history,
)
from actions.kubernetes.workloads import images as template_images

if TYPE_CHECKING:
    from actions.kubernetes.target import KubernetesTarget


def workload_kind(target: KubernetesTarget) -> Kind:
    """The configured kind, which is not a Deployment here."""
    kind = target.params.workload
    assert kind != "deployment"
    return kind


def workload_points(target: KubernetesTarget) -> list[RollbackPoint]:
    """List the ControllerRevisions newest first, the running one marked."""
    p = target.params
    entries = workload_history(
        target.apps, workload_kind(target), namespace=p.namespace, name=p.name
    )
    now = datetime.now(UTC)
    return [
        revision_point(e.number, e.images, e.created_at, current=e.is_current, now=now)
        for e in entries
    ]


def resolve(
    target: KubernetesTarget, ref: str | None
) -> tuple[Workload, V1ControllerRevision, int, str | None]:
    """Return the workload, the revision to restore, the current number, a strategy problem."""
    p = target.params
    workload = read_workload(target.apps, workload_kind(target), namespace=p.namespace, name=p.name)
    revisions = history(target.apps, workload)
    chosen = find_history(parse_revision(ref), revisions)
    current = next((r for r in revisions if matches(target.apps, workload, r)), None)
    strategy = workload.spec.update_strategy if workload.spec else None
    problem = None
    if strategy is None or strategy.type != "RollingUpdate":
        kind = strategy.type if strategy is not None else "none"
        problem = (
            f"{workload_kind(target)}/{p.name} uses updateStrategy {kind}: a rollback would "
            "change its template but no pod until someone deletes them; switch it to "
            "RollingUpdate or roll back by hand"
        )
    return workload, chosen, int(current.revision or 0) if current else 0, problem


def workload_checks(target: KubernetesTarget, ref: str | None) -> list[Check]:
    """Check the revision exists and differs, and the strategy is RollingUpdate."""
    name = "rollback revision exists"
    try:
        workload, chosen, _, problem = resolve(target, ref)
    except ActionError as exc:
        return [Check(name, False, str(exc))]
    number = int(chosen.revision or 0)
    template = revision_template(chosen)
    if matches(target.apps, workload, chosen):
        found = Check(name, False, f"revision {number} is what it already runs")
    else:
        found = Check(name, True, f"revision {number}: {', '.join(template_images(template))}")
    return [found, Check("update strategy RollingUpdate", problem is None, problem or "yes")]


def workload_plan(target: KubernetesTarget, ref: str | None, *, force: bool) -> TargetPlan:
    """The undo to the resolved revision (and its forced rollback), in the target's plan."""
    p = target.params
    try:
        workload, chosen, current, problem = resolve(target, ref)
    except ActionError as exc:
        raise PlanningError(str(exc)) from exc
    if problem is not None:
        raise PlanningError(problem)
    number = int(chosen.revision or 0)
    if matches(target.apps, workload, chosen) and not force:
        raise PlanningError(
            f"{workload_kind(target)}/{p.name} in {p.namespace} already runs revision {number}"
        )
    undo = WorkloadUndo(
        apps=target.apps,
        kind=workload_kind(target),
        namespace=p.namespace,
        workload=p.name,
        to_revision=number,
        revision_name=object_meta(chosen).name or "",
        from_revision=current,
        images=template_images(revision_template(chosen)),
    )
    notes = []
    strategy = workload.spec.update_strategy if workload.spec else None
    rolling = strategy.rolling_update if strategy is not None else None
    partition = getattr(rolling, "partition", None) or 0
    if partition:
        notes.append(
            f"statefulset/{p.name} has partition {partition}: only pods {partition} and up "
            f"go back to revision {number}; pods below it keep theirs"
        )
    forced = _forced_rollback(target, workload, undo, partition=partition)
    if forced:
        notes.append(
            f"statefulset/{p.name} uses podManagementPolicy OrderedReady: its controller "
            "never replaces a pod that is not Running and Ready, so after the undo the bot "
            f"deletes the pods still on revision {current} that are not ready (the forced "
            "rollback of the Kubernetes documentation); ready ones are replaced by the "
            "rolling update"
        )
    return target.assemble(
        undo,
        to_revision=number,
        images=undo.images,
        force=force,
        notes=notes,
        after_undo=forced,
    )


def _forced_rollback(
    target: KubernetesTarget, workload: Workload, undo: WorkloadUndo, *, partition: int
) -> list[Action]:
    """The forced-rollback step an OrderedReady StatefulSet needs after its undo (or none)."""
    if not isinstance(workload, V1StatefulSet) or not needs_forcing(workload):
        return []
    revisions = history(target.apps, workload)
    bad = next((r for r in revisions if matches(target.apps, workload, r)), None)
    if bad is None or object_meta(bad).name == undo.revision_name:
        return []
    return [
        ForcedRollback(
            apps=target.apps,
            namespace=undo.namespace,
            workload=undo.workload,
            revision_name=undo.revision_name,
            bad_revision=object_meta(bad).name or "",
            partition=partition,
        )
    ]
