"""The Kubernetes target: a workload's revisions as rollback points, its checks and plan.

The workload is a Deployment (revisions are its ReplicaSets), a StatefulSet
or a DaemonSet (revisions are ControllerRevisions), configured as
`workload: deployment|statefulset|daemonset` with `name:`; `deployment: NAME`
still works for a Deployment, as older configs say. The plan is the undo to
one resolved revision, then rollout status, with the configured worker
Deployments stopped before and started after. What is particular to a
StatefulSet or DaemonSet (strategy, partition, forced rollback) is in
workload_target.py; the verdict's evidence in evidence.py.

Before approval the plan names who else deploys the workload and its workers
(Argo CD, Flux, Helm: gitops.py), with the Argo CD parents that would switch
a suspended Application back on (its ApplicationSet, an app-of-apps parent),
and its prepare phase starts by holding those parents, farthest first, then
suspending the owners' automatic sync (`gitops_guard: false` turns that off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    V1Deployment,
    V1ReplicaSet,
)
from kubernetes.client.exceptions import ApiException

from actions.base import (
    Action,
    ActionError,
    Check,
    Finding,
    PermanentError,
    PlanningError,
    RollbackPoint,
    TargetPlan,
    TemporaryError,
    rebuild_step,
)
from actions.git.drill import WithdrawProposal
from actions.git.step import ProposeGitChange
from actions.kubernetes import access, autoscaling, gitops, rollouts
from actions.kubernetes.client import (
    ReadOnce,
    api_client,
    kube_errors,
    object_meta,
    read_deployment,
)
from actions.kubernetes.drill import ConfirmReconcile, DrillHold, ResumeSync
from actions.kubernetes.evidence import kubernetes_evidence
from actions.kubernetes.forced import ForcedRollback, needs_forcing
from actions.kubernetes.images import pull_secret_names
from actions.kubernetes.owners import Owner, is_parent, owner_note
from actions.kubernetes.params import KubernetesParams
from actions.kubernetes.recheck import TemplateCheck, recheck_deployment, recheck_workload
from actions.kubernetes.revisions import parse_revision, revision_point
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
from actions.kubernetes.workload_target import (
    resolve,
    workload_checks,
    workload_kind,
    workload_plan,
    workload_points,
)
from actions.kubernetes.workloads import (
    WorkloadStatus,
    WorkloadUndo,
    dry_run_undo,
    matches,
    read_workload,
    revision_template,
)
from actions.kubernetes.workloads import images as template_images
from actions.reads import Reads

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
            return workload_points(self)
        deployment, owned = read_with_replica_sets(
            self.apps, namespace=self.params.namespace, name=self.params.name
        )
        history = history_of(deployment, owned)
        unready = serving(deployment, history)
        now = datetime.now(UTC)
        return [
            dataclasses.replace(
                revision_point(r.number, r.images, r.created_at, current=r.is_current, now=now),
                unready=unready if r.is_current else "",
            )
            for r in history
        ]

    def checks(self, ref: str | None) -> list[Check]:
        """Check the revision exists and differs, the Deployment is not paused, workers exist."""
        if self.params.workload != "deployment":
            return [
                *workload_checks(self, ref),
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
        """The reversibility verdict's evidence: the checks weighed, owners named, images pulled."""
        return kubernetes_evidence(self, ref)

    def revision_facts(self, ref: str | None) -> RevisionFacts:
        """The revision `ref` would restore: its number, images, pull secrets, creation time."""
        p = self.params
        if p.workload == "deployment":
            deployment, owned = read_with_replica_sets(
                self.apps, namespace=p.namespace, name=p.name
            )
            target = find_revision(deployment, owned, parse_revision(ref))
            template = self.apps.api_client.sanitize_for_serialization(
                target.spec.template if target.spec else None
            )
            return RevisionFacts(
                number=revision_of(target) or 0,
                images=images_of(target),
                pull_secrets=pull_secret_names(template or {}),
                created_at=object_meta(target).creation_timestamp,
            )
        _, revision, _, _ = resolve(self, ref)
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
            target = find_revision(deployment, owned, parse_revision(ref))
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
            return workload_plan(self, ref, force=force)
        try:
            deployment, owned = read_with_replica_sets(
                self.apps, namespace=p.namespace, name=p.name
            )
            target = find_revision(deployment, owned, parse_revision(ref))
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
        return self.assemble(undo, to_revision=undo.to_revision, images=undo.images, force=force)

    def assemble(
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
        workers, found = self.usable_workers(force=force)
        notes = [
            *(notes or []),
            *found,
            *autoscaling.worker_notes(self.apps.api_client, namespace=p.namespace, workers=workers),
        ]
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
                    bad_images=self.running_images(),
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

    def running_images(self) -> tuple[str, ...]:
        """The images the workload's pod template names now (what the rollback replaces)."""
        return images_of(self.read_target())

    def owners(self, workers: tuple[str, ...] = ()) -> list[Owner]:
        """The Argo CD, Flux or Helm owners of the workload and the workers, one entry each."""
        p = self.params
        if not p.gitops_guard:
            return []
        metas = [(f"{p.workload}/{p.name}", object_meta(self.read_target()))]
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
            return needs_forcing(self.read_target())
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
                target = find_revision(deployment, owned, parse_revision(ref))
                if same_template(target, deployment):
                    return Check(name, True, "nothing to change")
                with kube_errors(f"dry run of the undo of deployment/{p.name}"):
                    self.apps.patch_namespaced_deployment(
                        p.name, p.namespace, undo_patch(deployment, target), dry_run="All"
                    )
            else:
                workload, revision, _, _ = resolve(self, ref)
                if matches(self.apps, workload, revision):
                    return Check(name, True, "nothing to change")
                dry_run_undo(self.apps, workload_kind(self), workload, revision)
        except ActionError as exc:
            return Check(name, False, str(exc))
        return Check(name, True, "the undo patch passes authorization, admission and validation")

    def read_target(self) -> Any:
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

    def usable_workers(self, *, force: bool) -> tuple[tuple[str, ...], list[str]]:
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
