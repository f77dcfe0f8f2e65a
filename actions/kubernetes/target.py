"""The Kubernetes target: a Deployment's revisions as rollback points, its checks and plan.

The plan is the undo to one resolved revision, then rollout status, with the
configured workers stopped before and started after.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes.client import ApiClient, AppsV1Api, V1Deployment, V1ReplicaSet

from actions.base import (
    Action,
    ActionError,
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    TargetPlan,
    TemporaryError,
)
from actions.clock import ago
from actions.kubernetes import autoscaling
from actions.kubernetes.client import KubeConnection, api_client, read_deployment
from actions.kubernetes.rollout import (
    PAUSED,
    RolloutUndo,
    current_replica_set,
    find_revision,
    images_of,
    read_with_replica_sets,
    revision_of,
    rollout_history,
    same_template,
)
from actions.kubernetes.status import RolloutStatus
from actions.kubernetes.workers import StartWorkers, StopWorkers, replica_count
from actions.params import Strict


class KubernetesParams(Strict):
    """A Deployment to roll back and the worker Deployments stopped meanwhile."""

    kind: Literal["kubernetes"]
    namespace: str
    deployment: str
    workers: list[str] = []
    connection: KubeConnection = KubeConnection()
    rollout_timeout: float = 300.0


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
                    [f"rev {r.number}", ", ".join(r.images), ago(r.created_at, now)]
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
            deployment, owned = read_with_replica_sets(
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
            target = find_revision(deployment, owned, _parse_ref(ref))
        except ActionError as exc:
            return Check(name, False, str(exc))
        number = revision_of(target)
        if same_template(target, deployment):
            return Check(name, False, f"revision {number} is what the deployment already runs")
        return Check(name, True, f"revision {number}: {', '.join(images_of(target))}")

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
        try:
            deployment, owned = read_with_replica_sets(
                self.apps, namespace=p.namespace, name=p.deployment
            )
            target = find_revision(deployment, owned, _parse_ref(ref))
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        if deployment.spec is not None and deployment.spec.paused:
            raise PlanningError(PAUSED)
        to = revision_of(target) or 0
        if same_template(target, deployment) and not force:
            raise PlanningError(
                f"deployment/{p.deployment} in {p.namespace} already runs revision {to}"
            )
        current = current_replica_set(deployment, owned)
        undo = RolloutUndo(
            apps=self.apps,
            namespace=p.namespace,
            deployment=p.deployment,
            to_revision=to,
            from_revision=(revision_of(current) if current is not None else revision_of(deployment))
            or 0,
            images=images_of(target),
        )
        return self._assemble(undo, force=force)

    def _assemble(self, undo: RolloutUndo, *, force: bool) -> TargetPlan:
        p = self.params
        workers, notes = self._usable_workers(force=force)
        notes += self._autoscaler_notes(workers)
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

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild an approved step from its stored spec, without reading the live system."""
        try:
            return self._rebuild(name, spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanningError(
                f"the stored spec of {name} cannot be read ({exc!r}); plan the rollback again"
            ) from exc

    def _rebuild(self, name: str, spec: dict[str, Any]) -> Action:
        namespace = str(spec["namespace"])
        timeout = float(spec["timeout"])
        match name:
            case "kubernetes.rollout_undo":
                return RolloutUndo(
                    apps=self.apps,
                    namespace=namespace,
                    deployment=str(spec["deployment"]),
                    to_revision=int(spec["to_revision"]),
                    from_revision=int(spec["from_revision"]),
                    images=tuple(str(i) for i in spec["images"]),
                    timeout=timeout,
                )
            case "kubernetes.rollout_status":
                return RolloutStatus(
                    apps=self.apps,
                    namespace=namespace,
                    deployment=str(spec["deployment"]),
                    timeout=timeout,
                )
            case "kubernetes.stop_workers" | "kubernetes.start_workers":
                kind = StopWorkers if name == "kubernetes.stop_workers" else StartWorkers
                workers = tuple(str(w) for w in spec["workers"])
                return kind(apps=self.apps, namespace=namespace, workers=workers, timeout=timeout)
        raise PlanningError(f"unknown Kubernetes step {name!r}; plan the rollback again")

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
