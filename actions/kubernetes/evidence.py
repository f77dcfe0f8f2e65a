"""The reversibility verdict's evidence for a Kubernetes workload.

A failed check blocks (the undo cannot work as planned) where the check is one the undo
needs, and is risky where it only fails to tell; an owner that deploys from Git or Helm is
risky (it puts the bad version back); a StatefulSet's claims keep what the bad version
wrote; each image of the revision is asked for at its registry (actions.kubernetes.images).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actions.base import ActionError, Check, Finding, Level, PlanningError
from actions.git.step import access_findings, image_pairs
from actions.kubernetes import autoscaling
from actions.kubernetes.client import object_meta
from actions.kubernetes.images import image_findings
from actions.kubernetes.owners import is_parent, parent_note
from actions.registry import image_labels
from actions.undone import undone

if TYPE_CHECKING:
    from actions.kubernetes.target import KubernetesTarget


BLOCKING = frozenset(
    {
        "deployment found",
        "rollback revision exists",
        "deployment not paused",
        "update strategy RollingUpdate",
        "workers found",
        "permissions granted (SelfSubjectAccessReview)",
        "undo accepted by the API server (dry run)",
    }
)


def _weigh(check: Check) -> Finding:
    """A passing check is evidence; a failing one blocks, or is risky if it only fails to tell."""
    level = Level.OK if check.ok else Level.BLOCKED if check.name in BLOCKING else Level.RISKY
    words = f"{check.name}: {check.detail}" if check.detail else check.name
    return Finding(level, words if check.ok else f"{check.name} fails: {check.detail}", check.name)


def kubernetes_evidence(target: KubernetesTarget, ref: str | None) -> list[Finding]:
    """The reversibility verdict's evidence: the checks weighed, owners named, images pulled.

    A failed check blocks (the undo cannot work as planned); an owner that deploys
    from Git or Helm is risky (it puts the bad version back); each image of the
    revision is asked for at its registry (actions.kubernetes.images).
    """
    findings = [
        _weigh(c) for c in target.checks(ref) if not (c.name == "GitOps owner known" and c.ok)
    ]
    try:
        owners = target.owners(tuple(target.params.workers))
    except ActionError:
        owners = []  # the weighed owner check says why
    findings += [
        Finding(
            Level.RISKY,
            f"{o.label} owns {', '.join(o.workloads)} and "
            + ("syncs automatically" if o.automatic else "does not sync automatically")
            + ": it puts the bad version back unless it is reverted at its source first",
            basis=f"owner {o.tool} {o.namespace}/{o.name} automatic={o.automatic}",
        )
        for o in owners
        if not is_parent(o)
    ]
    findings += [
        Finding(
            Level.RISKY if o.automatic else Level.OK,
            parent_note(o),
            basis=f"parent {o.tool} {o.namespace}/{o.name} automatic={o.automatic}",
        )
        for o in owners
        if is_parent(o)
    ]
    findings += _autoscaler_findings(target)
    findings += _volume_findings(target)
    if target.params.git is not None:
        findings += access_findings(target.params.git)
    if target.params.changes is not None:
        findings += _undone_findings(target, ref)
    try:
        revision = target.revision_facts(ref)
    except ActionError:
        return findings  # the weighed revision check says why
    if not target.params.verify_images:
        text = "images not checked in their registries (verify_images: false)"
        return [*findings, Finding(Level.OK, text, basis="images not checked")]
    return findings + image_findings(
        target.apps.api_client,
        namespace=target.params.namespace,
        images=revision.images,
        secrets=revision.pull_secrets,
    )


def _volume_findings(target: KubernetesTarget) -> list[Finding]:
    """A StatefulSet's volumeClaimTemplates: its PersistentVolumeClaims are not rolled back.

    The StatefulSet controller never deletes or changes a pod's claims when the template
    goes back (stateful_set_control.go only creates missing ones), so whatever the bad
    version wrote to them stays: the rollback cannot make that safe, the verdict says so.
    """
    if target.params.workload != "statefulset":
        return []
    try:
        sts = target.read_target()
    except ActionError:
        return []  # the workload checks say why
    claims = [object_meta(c).name or "" for c in (sts.spec.volume_claim_templates or [])]
    if not claims:
        return []
    return [
        Finding(
            Level.RISKY,
            f"statefulset/{target.params.name} keeps its PersistentVolumeClaims "
            f"({', '.join(f'{c}-{target.params.name}-N' for c in claims)}): the rollback "
            "restores the pod template, not the data the bad version wrote there; if it "
            "changed the data or its format, restore the data as well",
            basis=f"volumeClaimTemplates {','.join(claims)}",
        )
    ]


def _autoscaler_findings(target: KubernetesTarget) -> list[Finding]:
    """The workers' autoscalers: handled (KEDA paused, HPA idle at 0), or blocking."""
    try:
        workers, _ = target.usable_workers(force=True)
        notes = autoscaling.worker_notes(
            target.apps.api_client, namespace=target.params.namespace, workers=workers
        )
    except PlanningError as exc:
        return [Finding(Level.BLOCKED, str(exc), "autoscaler refused")]
    return [Finding(Level.OK, n, n.split(":", 1)[0]) for n in notes]


def _undone_findings(target: KubernetesTarget, ref: str | None) -> list[Finding]:
    """What the rollback takes away: commits, security fixes, migrations, configuration."""
    changes = target.params.changes
    assert changes is not None
    try:
        good = target.revision_facts(ref).images
        bad = target.running_images()
    except ActionError:
        return []  # the weighed revision check says why
    pairs = image_pairs(bad, good)
    if not pairs:
        return []
    was, to = pairs[0]
    token = changes.token.read().get_secret_value() if changes.token else None
    found = undone(
        running=str(was),
        target=str(to),
        labels_of=image_labels,
        repository=changes.repository,
        token=token,
        security=changes.security,
        migrations=changes.migrations,
        configuration=changes.configuration,
    )
    basis = f"undone {was.point()}..{to.point()}"
    findings = [Finding(Level.OK, found.said(), basis=f"{basis} {found.known}")]
    findings += [
        Finding(Level.RISKY, f"the rollback {reason}", basis=f"{basis} {reason}")
        for reason in found.risky
    ]
    return findings
