"""The Kubernetes target: a workload's revisions as rollback points, its checks and plan.

The workload is a Deployment (revisions are its ReplicaSets), a StatefulSet
or a DaemonSet (revisions are ControllerRevisions), configured as
`workload: deployment|statefulset|daemonset` with `name:`; `deployment: NAME`
still works for a Deployment, as older configs say. The plan is the undo to
one resolved revision, then rollout status, with the configured worker
Deployments stopped before and started after. A StatefulSet or DaemonSet
must use the RollingUpdate strategy: with OnDelete the undo would change the
template and no pod, so planning refuses; a StatefulSet partition is
respected (pods below it keep their revision) and named in the plan. An
OrderedReady StatefulSet's undo is followed by its forced rollback (forced.py):
the pods stuck on the bad revision are deleted, as the plan says.

Before approval the plan names who else deploys the workload and its workers
(Argo CD, Flux, Helm: gitops.py), with the Argo CD parents that would switch
a suspended Application back on (its ApplicationSet, an app-of-apps parent),
and its prepare phase starts by holding those parents, farthest first, then
suspending the owners' automatic sync (`gitops_guard: false` turns that off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    V1ControllerRevision,
    V1Deployment,
    V1ReplicaSet,
    V1StatefulSet,
)
from kubernetes.client.exceptions import ApiException

from actions.base import (
    Action,
    ActionError,
    Check,
    Finding,
    Level,
    PermanentError,
    PlanningError,
    RollbackPoint,
    TargetPlan,
    TemporaryError,
    rebuild_step,
)
from actions.clock import ago
from actions.git.drill import WithdrawProposal
from actions.git.step import ProposeGitChange, access_findings, image_pairs
from actions.kubernetes import access, autoscaling, gitops, rollouts
from actions.kubernetes.client import (
    ReadOnce,
    api_client,
    kube_errors,
    object_meta,
    read_deployment,
)
from actions.kubernetes.drill import ConfirmReconcile, DrillHold, ResumeSync
from actions.kubernetes.forced import ForcedRollback, needs_forcing
from actions.kubernetes.images import image_findings, pull_secret_names
from actions.kubernetes.owners import Owner, is_parent, owner_note, parent_note
from actions.kubernetes.params import KubernetesParams
from actions.kubernetes.recheck import TemplateCheck, recheck_deployment, recheck_workload
from actions.kubernetes.rollout import (
    PAUSED,
    RolloutUndo,
    current_replica_set,
    find_revision,
    history_of,
    images_of,
    read_with_replica_sets,
    revision_of,
    same_template,
    serving,
    undo_patch,
)
from actions.kubernetes.status import RolloutStatus
from actions.kubernetes.workers import StartWorkers, StopWorkers, replica_count
from actions.kubernetes.workloads import (
    Kind,
    Workload,
    WorkloadStatus,
    WorkloadUndo,
    dry_run_undo,
    find_history,
    history,
    matches,
    read_workload,
    revision_template,
    workload_history,
)
from actions.kubernetes.workloads import images as template_images
from actions.reads import Reads
from actions.registry import image_labels
from actions.undone import undone


def _parse_ref(ref: str | None) -> int:
    text = (ref or "0").strip().removeprefix("rev").strip()
    if not text.isdigit():
        raise PlanningError(f"{ref!r} is not a revision number")
    return int(text)


STEPS = (
    RolloutUndo,
    RolloutStatus,
    WorkloadUndo,
    WorkloadStatus,
    ForcedRollback,
    gitops.SuspendSync,
    StopWorkers,
    StartWorkers,
    ProposeGitChange,
    DrillHold,
    WithdrawProposal,
    ResumeSync,
    ConfirmReconcile,
)
"""The steps a Kubernetes plan holds, as `restore` finds them by name."""


@dataclasses.dataclass(frozen=True)
class RevisionFacts:
    """What the verdict needs to know of the revision a rollback restores."""

    number: int
    images: tuple[str, ...]
    pull_secrets: list[str]
    created_at: datetime | None


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


class KubernetesTarget:
    """A Deployment that can be rolled back to an earlier revision, with its workers."""

    def __init__(
        self, params: KubernetesParams, *, api: ApiClient | None = None, reads: Reads | None = None
    ) -> None:
        self.params = params
        self._api = api
        self._reads = reads

    def reading(self, reads: Reads) -> KubernetesTarget:
        """This target on the same connection, its reads made once through `reads`."""
        if self._api is None:
            self._api = api_client(self.params.connection)
        return KubernetesTarget(self.params, api=self._api, reads=reads)

    @property
    def apps(self) -> AppsV1Api:
        """The apps/v1 API, connecting on first use (read through `reads` when given)."""
        if self._api is None:
            self._api = api_client(self.params.connection)
        if self._reads is not None:
            return cast(AppsV1Api, ReadOnce(AppsV1Api(self._api), self._reads))
        return AppsV1Api(self._api)

    def points(self) -> list[RollbackPoint]:
        """List revisions newest first, the running one marked."""
        if self.params.workload != "deployment":
            return self._workload_points()
        deployment, owned = read_with_replica_sets(
            self.apps, namespace=self.params.namespace, name=self.params.name
        )
        history = history_of(deployment, owned)
        unready = serving(deployment, history)
        now = datetime.now(UTC)
        return [
            dataclasses.replace(
                _revision_point(r.number, r.images, r.created_at, current=r.is_current, now=now),
                unready=unready if r.is_current else "",
            )
            for r in history
        ]

    def checks(self, ref: str | None) -> list[Check]:
        """Check the revision exists and differs, the Deployment is not paused, workers exist."""
        if self.params.workload != "deployment":
            return [
                *self._workload_checks(ref),
                self._workers_check(),
                self._owner_check(),
                self._access_check(),
                self._dry_run_check(ref),
            ]
        try:
            deployment, owned = read_with_replica_sets(
                self.apps, namespace=self.params.namespace, name=self.params.name
            )
        except ActionError as exc:
            return [Check("deployment found", False, f"{exc}{self._rollout_hint(exc)}")]
        paused = bool(deployment.spec and deployment.spec.paused)
        return [
            self._revision_check(deployment, owned, ref),
            Check("deployment not paused", not paused, PAUSED if paused else "not paused"),
            self._rollouts_check(deployment),
            self._workers_check(),
            self._owner_check(),
            self._access_check(),
            self._dry_run_check(ref),
        ]

    def evidence(self, ref: str | None) -> list[Finding]:
        """The reversibility verdict's evidence: the checks weighed, owners named, images pulled.

        A failed check blocks (the undo cannot work as planned); an owner that deploys
        from Git or Helm is risky (it puts the bad version back); each image of the
        revision is asked for at its registry (actions.kubernetes.images).
        """
        findings = [
            _weigh(c) for c in self.checks(ref) if not (c.name == "GitOps owner known" and c.ok)
        ]
        try:
            owners = self.owners(tuple(self.params.workers))
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
        findings += self._autoscaler_findings()
        findings += self._volume_findings()
        if self.params.git is not None:
            findings += access_findings(self.params.git)
        if self.params.changes is not None:
            findings += self._undone_findings(ref)
        try:
            revision = self.revision_facts(ref)
        except ActionError:
            return findings  # the weighed revision check says why
        if not self.params.verify_images:
            text = "images not checked in their registries (verify_images: false)"
            return [*findings, Finding(Level.OK, text, basis="images not checked")]
        return findings + image_findings(
            self.apps.api_client,
            namespace=self.params.namespace,
            images=revision.images,
            secrets=revision.pull_secrets,
        )

    def _volume_findings(self) -> list[Finding]:
        """A StatefulSet's volumeClaimTemplates: its PersistentVolumeClaims are not rolled back.

        The StatefulSet controller never deletes or changes a pod's claims when the template
        goes back (stateful_set_control.go only creates missing ones), so whatever the bad
        version wrote to them stays: the rollback cannot make that safe, the verdict says so.
        """
        if self.params.workload != "statefulset":
            return []
        try:
            sts = self._read_target()
        except ActionError:
            return []  # the workload checks say why
        claims = [object_meta(c).name or "" for c in (sts.spec.volume_claim_templates or [])]
        if not claims:
            return []
        return [
            Finding(
                Level.RISKY,
                f"statefulset/{self.params.name} keeps its PersistentVolumeClaims "
                f"({', '.join(f'{c}-{self.params.name}-N' for c in claims)}): the rollback "
                "restores the pod template, not the data the bad version wrote there; if it "
                "changed the data or its format, restore the data as well",
                basis=f"volumeClaimTemplates {','.join(claims)}",
            )
        ]

    def _autoscaler_findings(self) -> list[Finding]:
        """The workers' autoscalers: handled (KEDA paused, HPA idle at 0), or blocking."""
        try:
            workers, _ = self._usable_workers(force=True)
            notes = self._autoscaler_notes(workers)
        except PlanningError as exc:
            return [Finding(Level.BLOCKED, str(exc), "autoscaler refused")]
        return [Finding(Level.OK, n, n.split(":", 1)[0]) for n in notes]

    def revision_facts(self, ref: str | None) -> RevisionFacts:
        """The revision `ref` would restore: its number, images, pull secrets, creation time."""
        p = self.params
        if p.workload == "deployment":
            deployment, owned = read_with_replica_sets(
                self.apps, namespace=p.namespace, name=p.name
            )
            target = find_revision(deployment, owned, _parse_ref(ref))
            template = self.apps.api_client.sanitize_for_serialization(
                target.spec.template if target.spec else None
            )
            return RevisionFacts(
                number=revision_of(target) or 0,
                images=images_of(target),
                pull_secrets=pull_secret_names(template or {}),
                created_at=object_meta(target).creation_timestamp,
            )
        _, revision, _, _ = self._resolve(ref)
        template = revision_template(revision)
        return RevisionFacts(
            number=int(revision.revision or 0),
            images=template_images(template),
            pull_secrets=pull_secret_names(template),
            created_at=object_meta(revision).creation_timestamp,
        )

    def _revision_check(
        self, deployment: V1Deployment, owned: list[V1ReplicaSet], ref: str | None
    ) -> Check:
        name = "rollback revision exists"
        try:
            target = find_revision(deployment, owned, _parse_ref(ref))
        except ActionError as exc:
            return Check(name, False, str(exc))
        number = revision_of(target)
        if same_template(target, deployment):
            return Check(name, False, f"revision {number} is what the deployment already runs")
        return Check(name, True, f"revision {number}: {', '.join(images_of(target))}")

    def _rollout_hint(self, exc: ActionError) -> str:
        """For a Deployment not found: is it an Argo Rollouts Rollout of that name?"""
        cause = exc.__cause__
        if not isinstance(cause, ApiException) or cause.status != 404:
            return ""
        return rollouts.rollout_hint(
            self.apps, namespace=self.params.namespace, name=self.params.name
        )

    def _rollouts_check(self, deployment: V1Deployment) -> Check:
        name = "not managed by Argo Rollouts"
        try:
            managed = rollouts.managed_by(self.apps, deployment)
        except ActionError as exc:
            return Check(name, False, f"cannot tell: {exc}")
        if managed is not None:
            return Check(name, False, managed.refusal(self.params.name))
        return Check(name, True, "no Argo Rollouts Rollout runs its pods")

    def _workers_check(self) -> Check:
        found, missing = [], []
        for worker in self.params.workers:
            try:
                deployment = read_deployment(
                    self.apps, namespace=self.params.namespace, name=worker
                )
                found.append(f"{worker} ({replica_count(deployment)} replicas)")
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
        if p.workload != "deployment":
            return self._workload_plan(ref, force=force)
        try:
            deployment, owned = read_with_replica_sets(
                self.apps, namespace=p.namespace, name=p.name
            )
            target = find_revision(deployment, owned, _parse_ref(ref))
        except ActionError as exc:
            raise PlanningError(f"{exc}{self._rollout_hint(exc)}") from exc
        if deployment.spec is not None and deployment.spec.paused:
            raise PlanningError(PAUSED)
        try:
            managed = rollouts.managed_by(self.apps, deployment)
        except ActionError as exc:
            raise PlanningError(f"cannot tell whether Argo Rollouts manages it: {exc}") from exc
        if managed is not None:
            raise PlanningError(managed.refusal(p.name))
        to = revision_of(target) or 0
        if same_template(target, deployment) and not force:
            raise PlanningError(f"deployment/{p.name} in {p.namespace} already runs revision {to}")
        current = current_replica_set(deployment, owned)
        undo = RolloutUndo(
            apps=self.apps,
            namespace=p.namespace,
            deployment=p.name,
            to_revision=to,
            from_revision=(revision_of(current) if current is not None else revision_of(deployment))
            or 0,
            images=images_of(target),
        )
        return self._assemble(undo, to_revision=undo.to_revision, images=undo.images, force=force)

    def _assemble(
        self,
        undo: Action,
        *,
        to_revision: int,
        images: tuple[str, ...],
        force: bool,
        notes: list[str] | None = None,
        after_undo: list[Action] | None = None,
    ) -> TargetPlan:
        p = self.params
        workers, found = self._usable_workers(force=force)
        notes = [*(notes or []), *found, *self._autoscaler_notes(workers)]
        revert = f"set {p.workload}/{p.name} back to {', '.join(images)}"
        try:
            owners = self.owners(workers)
        except ActionError as exc:
            raise PlanningError(f"cannot tell who deploys {p.workload}/{p.name}: {exc}") from exc
        notes += [owner_note(o, revert=revert) for o in owners]
        guard: list[Action] = [
            gitops.SuspendSync(
                api=self.apps.api_client,
                tool=o.tool,
                namespace=o.namespace,
                owner=o.name,
                revert=revert,
                children=tuple(
                    w.split("/", 1)[1] for w in o.workloads if o.tool == "argocd-applicationset"
                ),
            )
            for o in owners
            if o.suspendable and (o.automatic or not is_parent(o))
        ]
        notes.append(
            f"Kubernetes renumbers the restored revision: after the rollback, revision "
            f"{to_revision} is listed under the next revision number."
        )
        status: Action = (
            RolloutStatus(
                apps=self.apps, namespace=p.namespace, deployment=p.name, timeout=p.rollout_timeout
            )
            if p.workload == "deployment"
            else WorkloadStatus(
                apps=self.apps,
                kind=p.workload,
                namespace=p.namespace,
                workload=p.name,
                timeout=p.rollout_timeout,
            )
        )
        stop = (
            [StopWorkers(apps=self.apps, namespace=p.namespace, workers=workers)] if workers else []
        )
        start = (
            [StartWorkers(apps=self.apps, namespace=p.namespace, workers=workers)]
            if workers
            else []
        )
        verify: list[Action] = [status]
        if p.git is not None:
            verify.append(
                ProposeGitChange(
                    source=p.git,
                    workload=f"{p.workload}/{p.name}",
                    bad_images=self._running_images(),
                    good_images=images,
                )
            )
            if owners:
                notes.append(
                    "Sync stays suspended until the Git change is merged: resume it once Git "
                    "names the version production runs."
                )
        return TargetPlan(
            prepare=[*guard, *stop],
            rollback=[undo, *(after_undo or [])],
            verify=verify,
            resume=list(start),
            notes=notes,
        )

    def _undone_findings(self, ref: str | None) -> list[Finding]:
        """What the rollback takes away: commits, security fixes, migrations, configuration."""
        changes = self.params.changes
        assert changes is not None
        try:
            good = self.revision_facts(ref).images
            bad = self._running_images()
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

    def _running_images(self) -> tuple[str, ...]:
        """The images the workload's pod template names now (what the rollback replaces)."""
        return images_of(self._read_target())

    def owners(self, workers: tuple[str, ...] = ()) -> list[Owner]:
        """The Argo CD, Flux or Helm owners of the workload and the workers, one entry each."""
        p = self.params
        if not p.gitops_guard:
            return []
        metas = [(f"{p.workload}/{p.name}", object_meta(self._read_target()))]
        for worker in workers:
            try:
                deployment = read_deployment(self.apps, namespace=p.namespace, name=worker)
            except PermanentError:
                continue  # a missing worker is the workers check's to report
            metas.append((f"deployment/{worker}", object_meta(deployment)))
        found: dict[tuple[str, str, str], Owner] = {}
        depth: dict[tuple[str, str, str], int] = {}

        def add(owner: Owner, label: str, level: int) -> None:
            key = (owner.tool, owner.namespace, owner.name)
            known = found.get(key, dataclasses.replace(owner, workloads=()))
            if label not in known.workloads:
                known = dataclasses.replace(known, workloads=(*known.workloads, label))
            found[key] = known
            depth[key] = max(depth.get(key, 0), level)

        for label, meta in metas:
            owner = gitops.detect_owner(
                self.apps.api_client, meta, argocd_namespace=p.argocd_namespace
            )
            if owner is None:
                continue
            add(owner, label, 0)
            if owner.tool != "argocd":
                continue
            chain = gitops.parents(
                self.apps.api_client,
                "argocd",
                owner.namespace,
                owner.name,
                argocd_namespace=p.argocd_namespace,
            )
            for level, parent in enumerate(chain, start=1):
                add(parent, parent.workloads[0], level)
        # Parents first, farthest first: each is held before what it would put back.
        return sorted(found.values(), key=lambda o: -depth[(o.tool, o.namespace, o.name)])

    def _access_check(self) -> Check:
        p = self.params
        try:
            owners = self.owners(tuple(p.workers))
        except ActionError:
            owners = []  # the owner check reports why
        wanted = access.needs(
            workload=p.workload,
            namespace=p.namespace,
            workers=bool(p.workers),
            owners=[(o.tool, o.namespace) for o in owners if o.suspendable],
            helm=any(o.tool == "helm" for o in owners),
            forced_rollback=self._forces(),
        )
        return access.access_check(self.apps.api_client, wanted)

    def _forces(self) -> bool:
        """Whether the plan may delete stuck pods (an OrderedReady StatefulSet); True if unread."""
        if self.params.workload != "statefulset":
            return False
        try:
            return needs_forcing(self._read_target())
        except ActionError:
            return True  # the workload checks say why it cannot be read

    def _dry_run_check(self, ref: str | None) -> Check:
        """Send the undo patch with dryRun=All, so an RBAC or admission refusal shows now."""
        name = "undo accepted by the API server (dry run)"
        p = self.params
        try:
            if p.workload == "deployment":
                deployment, owned = read_with_replica_sets(
                    self.apps, namespace=p.namespace, name=p.name
                )
                target = find_revision(deployment, owned, _parse_ref(ref))
                if same_template(target, deployment):
                    return Check(name, True, "nothing to change")
                with kube_errors(f"dry run of the undo of deployment/{p.name}"):
                    self.apps.patch_namespaced_deployment(
                        p.name, p.namespace, undo_patch(deployment, target), dry_run="All"
                    )
            else:
                workload, revision, _, _ = self._resolve(ref)
                if matches(self.apps, workload, revision):
                    return Check(name, True, "nothing to change")
                dry_run_undo(self.apps, self._kind, workload, revision)
        except ActionError as exc:
            return Check(name, False, str(exc))
        return Check(name, True, "the undo patch passes authorization, admission and validation")

    def _read_target(self) -> Any:
        p = self.params
        if p.workload == "deployment":
            return read_deployment(self.apps, namespace=p.namespace, name=p.name)
        return read_workload(self.apps, p.workload, namespace=p.namespace, name=p.name)

    def _owner_check(self) -> Check:
        try:
            owners = self.owners(tuple(self.params.workers))
        except ActionError as exc:
            return Check("GitOps owner known", False, str(exc))
        if not owners:
            return Check("GitOps owner known", True, "no Argo CD, Flux or Helm owner found")
        return Check(
            "GitOps owner known",
            True,
            "; ".join(owner_note(o, revert="revert the release") for o in owners),
        )

    def _autoscaler_notes(self, workers: tuple[str, ...]) -> list[str]:
        """Say which autoscalers act on the workers; refuse an HPA that scales from zero."""
        if not workers:
            return []
        api = self.apps.api_client
        namespace = self.params.namespace
        try:
            keda = autoscaling.scaled_objects(api, namespace=namespace, workers=workers)
            hpas = autoscaling.hpas(api, namespace=namespace, workers=workers)
        except ActionError as exc:
            raise PlanningError(f"cannot list the workers' autoscalers: {exc}") from exc
        from_zero = [h for h in hpas if h.min_replicas == 0]
        if from_zero:
            names = ", ".join(f"{h.label} (deployment/{h.worker})" for h in from_zero)
            raise PlanningError(
                f"{names} has minReplicas 0, so it may scale the stopped worker up during the "
                "rollback; set minReplicas to 1 or more, or leave that worker out"
            )
        notes = [
            f"{k.label} autoscales deployment/{k.worker}: paused at 0 replicas while the workers "
            "are stopped, its own pause annotations put back after"
            for k in keda
        ]
        notes += [
            f"{h.label} autoscales deployment/{h.worker}: it does nothing while the worker has 0 "
            "replicas (ScalingDisabled) and takes over again once it is restarted"
            for h in hpas
        ]
        return notes

    # --- StatefulSet and DaemonSet ------------------------------------------------------------

    @property
    def _kind(self) -> Kind:
        kind = self.params.workload
        assert kind != "deployment"
        return kind

    def _workload_points(self) -> list[RollbackPoint]:
        p = self.params
        entries = workload_history(self.apps, self._kind, namespace=p.namespace, name=p.name)
        now = datetime.now(UTC)
        return [
            _revision_point(e.number, e.images, e.created_at, current=e.is_current, now=now)
            for e in entries
        ]

    def _resolve(self, ref: str | None) -> tuple[Workload, V1ControllerRevision, int, str | None]:
        """Return the workload, the revision to restore, the current number, a strategy problem."""
        p = self.params
        workload = read_workload(self.apps, self._kind, namespace=p.namespace, name=p.name)
        revisions = history(self.apps, workload)
        target = find_history(_parse_ref(ref), revisions)
        current = next((r for r in revisions if matches(self.apps, workload, r)), None)
        strategy = workload.spec.update_strategy if workload.spec else None
        problem = None
        if strategy is None or strategy.type != "RollingUpdate":
            kind = strategy.type if strategy is not None else "none"
            problem = (
                f"{self._kind}/{p.name} uses updateStrategy {kind}: a rollback would change its "
                "template but no pod until someone deletes them; switch it to RollingUpdate or "
                "roll back by hand"
            )
        return workload, target, int(current.revision or 0) if current else 0, problem

    def _workload_checks(self, ref: str | None) -> list[Check]:
        name = "rollback revision exists"
        try:
            workload, target, _, problem = self._resolve(ref)
        except ActionError as exc:
            return [Check(name, False, str(exc))]
        number = int(target.revision or 0)
        template = revision_template(target)
        if matches(self.apps, workload, target):
            found = Check(name, False, f"revision {number} is what it already runs")
        else:
            found = Check(name, True, f"revision {number}: {', '.join(template_images(template))}")
        return [found, Check("update strategy RollingUpdate", problem is None, problem or "yes")]

    def _workload_plan(self, ref: str | None, *, force: bool) -> TargetPlan:
        p = self.params
        try:
            workload, target, current, problem = self._resolve(ref)
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        if problem is not None:
            raise PlanningError(problem)
        number = int(target.revision or 0)
        if matches(self.apps, workload, target) and not force:
            raise PlanningError(
                f"{self._kind}/{p.name} in {p.namespace} already runs revision {number}"
            )
        undo = WorkloadUndo(
            apps=self.apps,
            kind=self._kind,
            namespace=p.namespace,
            workload=p.name,
            to_revision=number,
            revision_name=object_meta(target).name or "",
            from_revision=current,
            images=template_images(revision_template(target)),
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
        forced = self._forced_rollback(workload, undo, partition=partition)
        if forced:
            notes.append(
                f"statefulset/{p.name} uses podManagementPolicy OrderedReady: its controller "
                "never replaces a pod that is not Running and Ready, so after the undo the bot "
                f"deletes the pods still on revision {current} that are not ready (the forced "
                "rollback of the Kubernetes documentation); ready ones are replaced by the "
                "rolling update"
            )
        return self._assemble(
            undo,
            to_revision=number,
            images=undo.images,
            force=force,
            notes=notes,
            after_undo=forced,
        )

    def _forced_rollback(
        self, workload: Workload, undo: WorkloadUndo, *, partition: int
    ) -> list[Action]:
        """The forced-rollback step an OrderedReady StatefulSet needs after its undo (or none)."""
        if not isinstance(workload, V1StatefulSet) or not needs_forcing(workload):
            return []
        revisions = history(self.apps, workload)
        bad = next((r for r in revisions if matches(self.apps, workload, r)), None)
        if bad is None or object_meta(bad).name == undo.revision_name:
            return []
        return [
            ForcedRollback(
                apps=self.apps,
                namespace=undo.namespace,
                workload=undo.workload,
                revision_name=undo.revision_name,
                bad_revision=object_meta(bad).name or "",
                partition=partition,
            )
        ]

    # --- after a successful rollback -----------------------------------------------------------

    def recheck(self, name: str, spec: dict[str, Any]) -> TemplateCheck:
        """Re-read the workload an undo step (`name`, its stored `spec`) restored; compare."""
        undo = self.restore(name, spec)
        if isinstance(undo, RolloutUndo):
            return recheck_deployment(
                self.apps,
                namespace=undo.namespace,
                name=undo.deployment,
                to_revision=undo.to_revision,
                images=undo.images,
            )
        if isinstance(undo, WorkloadUndo):
            return recheck_workload(
                self.apps,
                undo.kind,
                namespace=undo.namespace,
                name=undo.workload,
                revision_name=undo.revision_name,
                images=undo.images,
            )
        raise PlanningError(f"{name} is not a Kubernetes undo step; nothing to re-check")

    def resume_sync(self, spec: dict[str, Any], memory: MutableMapping[str, Any]) -> str:
        """Resume the automatic sync a `kubernetes.suspend_sync` step (its `spec`) suspended."""
        held = gitops.SuspendSync.rebuild(spec, api=self.apps.api_client)
        return gitops.resume_sync(
            held.api, held.tool, namespace=held.namespace, name=held.owner, memory=memory
        )

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild an approved step from its stored spec, without reading the live system."""
        return rebuild_step(
            STEPS, "a Kubernetes target", name, spec, apps=self.apps, api=self.apps.api_client
        )

    def _usable_workers(self, *, force: bool) -> tuple[tuple[str, ...], list[str]]:
        usable, notes = [], []
        for worker in self.params.workers:
            try:
                read_deployment(self.apps, namespace=self.params.namespace, name=worker)
                usable.append(worker)
            except PermanentError as exc:
                if not force:
                    raise PlanningError(f"worker deployment/{worker}: {exc}") from exc
                notes.append(f"worker deployment/{worker} left out: {exc}")
            except TemporaryError as exc:
                raise PlanningError(f"worker deployment/{worker}: {exc}") from exc
        return tuple(usable), notes


def _revision_point(
    number: int,
    images: Sequence[str],
    created_at: datetime | None,
    *,
    current: bool,
    now: datetime,
) -> RollbackPoint:
    """A revision as people pick it: `rev 3 · image · 2 h ago · current`; its images are its
    version (an undo renumbers revisions, the images stay)."""
    words = [f"rev {number}", ", ".join(images), ago(created_at, now)]
    return RollbackPoint(
        ref=str(number),
        label=" · ".join(words + (["current"] if current else [])),
        created_at=created_at,
        is_current=current,
        version=", ".join(images),
    )
