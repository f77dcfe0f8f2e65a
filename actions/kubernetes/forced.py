"""Forced rollback of a StatefulSet whose pods hang on the bad revision.

Under `podManagementPolicy: OrderedReady` the StatefulSet controller stops at
the first pod that is not Running and Ready (kubernetes
pkg/controller/statefulset/stateful_set_control.go processReplica, monotonic
mode) before it reaches the rolling update, so a pod that never became ready on
the bad revision is never replaced, even after the template is reverted. The
Kubernetes documentation (website content/en/docs/concepts/workloads/
controllers/statefulset.md, "Forced rollback") prescribes the way out: revert
the template, then delete the pods the StatefulSet already tried to run with
the bad configuration; the controller recreates them from the reverted one.

So after the undo this step waits until the controller has taken the reverted
template (observedGeneration current, updateRevision the restored
ControllerRevision), then deletes exactly the pods labelled with the bad
revision, at or above the partition, that are neither terminating nor Running
and Ready. A ready pod on the bad revision is left to the rolling update,
which replaces it by itself. With `Parallel` the controller replaces a stuck
pod itself, so the plan has no such step; a DaemonSet's rolling update
replaces an unavailable old pod at once (update.go rollingUpdate), so neither
does a DaemonSet. The deletion is a plain graceful DELETE, as the
documentation does it: a PodDisruptionBudget governs evictions, not deletes,
and a pod that is not ready counts as disrupted already.
"""

from __future__ import annotations

from kubernetes.client import AppsV1Api, CoreV1Api, V1Pod, V1StatefulSet
from kubernetes.client.exceptions import ApiException

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
from actions.kubernetes.client import REQUEST_TIMEOUT, kube_errors, object_meta
from actions.kubernetes.rollout import controlled, selected
from actions.kubernetes.status import follow

POD_REVISION = "controller-revision-hash"
ORDERED = "OrderedReady"


def needs_forcing(sts: V1StatefulSet) -> bool:
    """Tell whether the set's controller leaves a stuck pod alone (OrderedReady, RollingUpdate)."""
    spec = sts.spec
    if spec is None:
        return False
    strategy = spec.update_strategy
    rolling = strategy is None or strategy.type in (None, "RollingUpdate")
    return rolling and (spec.pod_management_policy or ORDERED) == ORDERED


def _ordinal(pod: V1Pod) -> int:
    tail = (object_meta(pod).name or "").rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _running_and_ready(pod: V1Pod) -> bool:
    """stateful_set_utils.go isRunningAndReady: phase Running and the Ready condition True."""
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def stuck_pods(
    core: CoreV1Api, sts: V1StatefulSet, *, bad_revision: str, partition: int
) -> list[V1Pod]:
    """The set's pods on `bad_revision`, from `partition` up, not terminating, not ready."""
    context = f"listing the pods of statefulset/{object_meta(sts).name}"
    pods: list[V1Pod] = controlled(sts, selected(core.list_namespaced_pod, sts, context=context))
    return [
        pod
        for pod in pods
        if (object_meta(pod).labels or {}).get(POD_REVISION) == bad_revision
        and _ordinal(pod) >= partition
        and object_meta(pod).deletion_timestamp is None
        and not _running_and_ready(pod)
    ]


class ForcedRollback(Step):
    """Delete the pods a reverted OrderedReady StatefulSet leaves stuck on the bad revision."""

    name: str = fixed("kubernetes.forced_rollback")
    idempotent: bool = fixed(True)
    timeout: float = 120.0
    apps: AppsV1Api = given()
    namespace: str
    workload: str
    revision_name: str
    """The ControllerRevision the undo restores."""
    bad_revision: str
    """The ControllerRevision rolled away from: its pods are the ones deleted."""
    partition: int = 0

    def describe(self) -> str:
        """Say which pods go, why, and that nothing else is touched."""
        above = f", ordinals {self.partition} and up" if self.partition else ""
        return (
            f"Forced rollback of statefulset/{self.workload} in {self.namespace}: once the "
            f"controller has taken the reverted template ({self.revision_name}), delete its pods "
            f"still on {self.bad_revision} that are not Running and Ready{above}; with "
            "podManagementPolicy OrderedReady the controller never replaces them itself, and "
            "recreates them from the reverted template once they are gone"
        )

    def label(self) -> str:
        """Words for the progress message."""
        return f"Delete the pods of statefulset/{self.workload} stuck on the bad revision"

    def _reverted(self, ctx: StepContext) -> V1StatefulSet:
        """Wait until the controller has observed the reverted template."""
        watched = follow(
            self.apps.list_namespaced_stateful_set,
            namespace=self.namespace,
            name=self.workload,
            kind="statefulset",
            remaining=ctx.remaining,
        )
        try:
            for sts in watched:
                status, meta = sts.status, object_meta(sts)
                if status is None or (status.observed_generation or 0) < (meta.generation or 0):
                    if ctx.remaining() <= 0:
                        break
                    continue
                if status.update_revision != self.revision_name:
                    raise PermanentError(
                        f"statefulset/{self.workload} in {self.namespace} now updates to "
                        f"{status.update_revision}, not the reverted {self.revision_name}: its "
                        "template changed after the undo; no pod was deleted"
                    )
                return sts  # type: ignore[no-any-return]
        finally:
            watched.close()
        raise PermanentError(
            f"statefulset/{self.workload} in {self.namespace}: the controller did not take the "
            "reverted template in time; no pod was deleted"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Wait for the revert to be observed, then delete the stuck pods (none: skipped)."""
        sts = self._reverted(ctx)
        core = CoreV1Api(self.apps.api_client)
        stuck = stuck_pods(core, sts, bad_revision=self.bad_revision, partition=self.partition)
        if not stuck:
            return StepResult(
                summary=f"no pod of statefulset/{self.workload} is stuck on {self.bad_revision}",
                skipped=True,
            )
        deleted = []
        for pod in stuck:
            name = object_meta(pod).name or ""
            try:
                with kube_errors(f"deleting pod/{name} in {self.namespace}"):
                    core.delete_namespaced_pod(
                        name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                    )
            except PermanentError as exc:
                if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                    continue  # gone meanwhile: what this step wanted
                raise
            deleted.append(name)
            ctx.emit(f'pod "{name}" deleted (stuck on {self.bad_revision})')
        return StepResult(
            summary=(
                f"deleted {len(deleted)} pod(s) of statefulset/{self.workload} stuck on "
                f"{self.bad_revision}: {', '.join(deleted) or 'none left'}"
            ),
            output="\n".join(f"pod/{n} deleted" for n in deleted),
            data={"deleted": deleted},
        )
