"""The timed re-check after a successful rollback: does the workload still run what was restored?

Argo CD self-heal, Flux, a person with kubectl or a CI pipeline can put another
pod template back minutes after the bot reported success. A while later
(`recheck_after` on the target) the bot reads the workload again and compares
its pod template with the template of the revision the rollback restored,
found the way the undo step finds it after the controller renumbered it
(Deployment: revision or revision-history of its ReplicaSets; StatefulSet and
DaemonSet: the ControllerRevision's name). The comparison is the undo's own
(pod-template-hash ignored, nulls and empty values dropped), so "changed"
means exactly "an undo would patch it again".

A revision the history no longer holds (revisionHistoryLimit) cannot be
compared template for template; then the images approved are compared with
the images running, and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client import AppsV1Api

from actions.base import PermanentError
from actions.kubernetes.client import object_meta
from actions.kubernetes.rollout import (
    current_replica_set,
    find_revision_or_renumbered,
    images_of,
    read_with_replica_sets,
    revision_of,
    same_template,
)
from actions.kubernetes.workloads import (
    Kind,
    history,
    matches,
    read_workload,
    revision_template,
    workload_template,
)
from actions.kubernetes.workloads import images as template_images


@dataclass(frozen=True)
class TemplateCheck:
    """What the re-check found: the workload, the images restored and running, and whether
    the pod template is still the one restored."""

    workload: str
    restored: tuple[str, ...]
    live: tuple[str, ...]
    changed: bool
    detail: str


def _said(images: tuple[str, ...]) -> str:
    return ", ".join(images) or "no image"


def _verdict(
    workload: str, restored: tuple[str, ...], live: tuple[str, ...], changed: bool, where: str
) -> TemplateCheck:
    if not changed:
        return TemplateCheck(
            workload, restored, live, False, f"{workload} still runs {_said(live)}"
        )
    return TemplateCheck(
        workload,
        restored,
        live,
        True,
        f"{workload} no longer runs the pod template the rollback restored: image "
        f"{_said(restored)} → {_said(live)} ({where})",
    )


def recheck_deployment(
    apps: AppsV1Api, *, namespace: str, name: str, to_revision: int, images: tuple[str, ...]
) -> TemplateCheck:
    """Compare the Deployment's template with the restored revision's."""
    workload = f"deployment/{name}"
    deployment, owned = read_with_replica_sets(apps, namespace=namespace, name=name)
    live = images_of(deployment)
    current = current_replica_set(deployment, owned)
    where = (
        f"now revision {revision_of(current)}"
        if current is not None
        else "a template not in its history yet"
    )
    try:
        target = find_revision_or_renumbered(deployment, owned, to_revision)
    except PermanentError:
        changed = live != images
        return _verdict(
            workload, images, live, changed, f"{where}; revision {to_revision} left the history"
        )
    changed = not same_template(target, deployment)
    return _verdict(workload, images_of(target), live, changed, where)


def recheck_workload(
    apps: AppsV1Api,
    kind: Kind,
    *,
    namespace: str,
    name: str,
    revision_name: str,
    images: tuple[str, ...],
) -> TemplateCheck:
    """Compare a StatefulSet's or DaemonSet's template with the restored ControllerRevision's."""
    workload = f"{kind}/{name}"
    found = read_workload(apps, kind, namespace=namespace, name=name)
    live = template_images(workload_template(apps, found))
    revisions = history(apps, found)
    current = next((r for r in revisions if matches(apps, found, r)), None)
    where = (
        f"now revision {current.revision}"
        if current is not None
        else "a template not in its history yet"
    )
    target = next((r for r in revisions if object_meta(r).name == revision_name), None)
    if target is None:
        changed = live != images
        return _verdict(
            workload, images, live, changed, f"{where}; {revision_name} left the history"
        )
    restored = template_images(revision_template(target))
    return _verdict(workload, restored, live, not matches(apps, found, target), where)
