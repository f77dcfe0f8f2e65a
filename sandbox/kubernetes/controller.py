"""The deployment controller, after kube-controller-manager's (pkg/controller/deployment).

For each Deployment it finds the ReplicaSets it controls (ownerReference with
controller=true and the Deployment's uid), picks the "new" one whose template
equals the Deployment's ignoring pod-template-hash (the oldest if several), or
creates it with the next revision (sync.go getNewReplicaSet); a reused
ReplicaSet gets the next revision and keeps its old numbers in
revision-history, which is what makes `rollout undo` renumber revisions
(deployment_util.go SetNewReplicaSetAnnotations). It then scales by the
rolling-update arithmetic (rolling.go reconcileNewReplicaSet /
reconcileOldReplicaSets / cleanupUnhealthyReplicas: maxSurge rounded up,
maxUnavailable rounded down, unhealthy old replicas removed first) or, for
Recreate, scales every old ReplicaSet to 0 and the new one up only when no old
pod, terminating or not, is left (recreate.go rolloutRecreate, oldPodsRunning);
cleans up history beyond revisionHistoryLimit (sync.go cleanupDeployment); and
writes status and the Available / Progressing conditions as progress.go
syncRolloutStatus does. In particular a `Progressing=False,
ProgressDeadlineExceeded` condition is kept, message and all, with
observedGeneration already current, until the status shows progress
(deployment_util.go DeploymentProgressing compares the new status with the
stored one; DeploymentTimedOut returns true for a condition that already timed
out; SetDeploymentCondition is a no-op for the same status and reason).

Pods are the ReplicaSet controller's and the kubelet's (pods.py); the
ReplicaSet status this controller reads is what they last wrote. A Deployment
can be blocked (its new pods never become Ready) or failing (blocked, with a
progress deadline of zero).
"""

from __future__ import annotations

import copy
import math

from sandbox.kubernetes.objects import (
    DESIRED_REPLICAS,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    SKIP_COPY,
    ApiError,
    Obj,
    controlled_by,
    resolve_fenceposts,
    revision_of,
    template_hash,
    templates_equal,
    timestamp,
)
from sandbox.kubernetes.pods import ReplicaSets
from sandbox.kubernetes.store import Store

DeploymentKey = tuple[str, str]
PROGRESSING, AVAILABLE = "Progressing", "Available"


def _spec(rs: Obj) -> int:
    return int(rs["spec"].get("replicas", 0))


def _available(rs: Obj) -> int:
    return int(rs["status"].get("availableReplicas", 0))


def _condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def _set_condition(status: Obj, condition: Obj, *, force: bool = False) -> None:
    """Set a condition as SetDeploymentCondition does: same status and reason is a no-op."""
    current = _condition(status, condition["type"])
    if (
        current
        and not force
        and (current["status"], current["reason"])
        == (
            condition["status"],
            condition["reason"],
        )
    ):
        return
    if current and current["status"] == condition["status"]:
        condition["lastTransitionTime"] = current["lastTransitionTime"]
    others = [c for c in status.get("conditions") or [] if c["type"] != condition["type"]]
    status["conditions"] = [*others, condition]


class Controller:
    """Reconciles Deployments into ReplicaSets and status."""

    def __init__(self, store: Store, *, ready_delay: float) -> None:
        self.store = store
        self.replicas = ReplicaSets(store, ready_delay=ready_delay)
        self.blocked: set[DeploymentKey] = set()
        self.failing: set[DeploymentKey] = set()
        self._progress_at: dict[str, float] = {}

    @property
    def ready_delay(self) -> float:
        """Seconds a new pod takes to become Ready."""
        return self.replicas.ready_delay

    @ready_delay.setter
    def ready_delay(self, seconds: float) -> None:
        self.replicas.ready_delay = seconds

    def sync_all(self) -> None:
        """Reconcile every Deployment once."""
        with self.store.cond:
            for d in self.store.list("deployments"):
                self.sync(d["metadata"]["namespace"], d["metadata"]["name"])

    def sync(self, namespace: str, name: str, *, settle: bool = False) -> None:
        """Reconcile one Deployment until nothing more changes at this instant."""
        with self.store.cond:
            for _ in range(200):
                d = self.store.find("deployments", namespace, name)
                if d is None:
                    return
                changed = self._step(d)
                changed |= self._sync_replica_sets(d, settle=settle)
                if not changed:
                    return

    # --- one reconciliation step ---------------------------------------------------------------

    def _step(self, d: Obj) -> bool:
        """One pass of syncDeployment (pkg/controller/deployment/sync.go, rolling.go, recreate.go).

        ReplicaSet specs change here; their status is the ReplicaSet
        controller's (pods.py), read as last written, so the Deployment status
        written now can lag what the ReplicaSets are about to do, as upstream.
        """
        now = self.store.clock()
        owned = self._owned(d)
        before = {rs["metadata"]["uid"]: copy.deepcopy(rs) for rs in owned}
        new_rs = next(
            (rs for rs in owned if templates_equal(rs["spec"]["template"], d["spec"]["template"])),
            None,
        )
        old = [rs for rs in owned if rs is not new_rs]
        paused = bool(d["spec"].get("paused"))
        recreate = d["spec"].get("strategy", {}).get("type") == "Recreate"
        if new_rs is None and not paused and not (recreate and self._old_pods_running(None, old)):
            # recreate.go rolloutRecreate: the new ReplicaSet is created only once no old pod runs.
            self._create_replica_set(d, old, now)
            return True
        if new_rs is not None and not paused:
            self._annotate_new(d, new_rs, old)
        if paused:
            self._scale_paused(d, new_rs, old, now)
        elif recreate:
            self._scale_recreate(d, new_rs, old, now)
        else:
            self._scale_rolling(d, new_rs, old, now)
        changed = self._write_changed(owned, before)
        changed |= self._cleanup(d, new_rs, old)
        return self._write_deployment(d, new_rs, owned, now) or changed

    def _owned(self, d: Obj) -> list[Obj]:
        return sorted(
            (
                rs
                for rs in self.store.list("replicasets", d["metadata"]["namespace"])
                if controlled_by(rs, d)
            ),
            key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]),
        )

    def _sync_replica_sets(self, d: Obj, *, settle: bool) -> bool:
        """Run the ReplicaSet controller and kubelet for the Deployment's ReplicaSets."""
        key = (d["metadata"]["namespace"], d["metadata"]["name"])
        changed = False
        for rs in self._owned(d):
            is_new = templates_equal(rs["spec"]["template"], d["spec"]["template"])
            blocked = is_new and key in self.blocked
            changed |= self.replicas.sync(rs, blocked=blocked, settle=settle)
        return changed

    # --- the new ReplicaSet ---------------------------------------------------------------------

    def _create_replica_set(self, d: Obj, old: list[Obj], now: float) -> None:
        meta, spec = d["metadata"], d["spec"]
        surge, _ = resolve_fenceposts(spec)
        revision = max((revision_of(rs) for rs in old), default=0) + 1
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k not in SKIP_COPY
        }
        annotations.update(
            {
                REVISION: str(revision),
                DESIRED_REPLICAS: str(spec["replicas"]),
                MAX_REPLICAS: str(spec["replicas"] + surge),
            }
        )
        collisions = int(d["status"].get("collisionCount", 0))
        while True:
            rs = self._replica_set_for(d, annotations, collisions)
            try:
                created = self.store.create("replicasets", rs)
                break
            except ApiError as exc:
                if exc.code != 409:
                    raise
                collisions += 1
        stored = self.store.get("deployments", meta["namespace"], meta["name"])
        if collisions:
            stored["status"]["collisionCount"] = collisions
        message = f'Created new replica set "{created["metadata"]["name"]}"'
        self._progress(stored, stored["status"], "NewReplicaSetCreated", message, now, force=True)
        self.store.update("deployments", stored, check_version=False)

    @staticmethod
    def _replica_set_for(d: Obj, annotations: dict[str, str], collisions: int) -> Obj:
        template = copy.deepcopy(d["spec"]["template"])
        pod_hash = template_hash(template, collisions)
        template["metadata"].setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": d["metadata"]["name"],
            "uid": d["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        spec: Obj = {"replicas": 0, "selector": selector, "template": template}
        if d["spec"].get("minReadySeconds"):
            spec["minReadySeconds"] = d["spec"]["minReadySeconds"]
        return {
            "metadata": {
                "name": f"{d['metadata']['name']}-{pod_hash}",
                "namespace": d["metadata"]["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": dict(annotations),
                "ownerReferences": [owner],
            },
            "spec": spec,
        }

    @staticmethod
    def _annotate_new(d: Obj, new_rs: Obj, old: list[Obj]) -> None:
        """Copy the Deployment's annotations and give a reused ReplicaSet the next revision.

        sync.go getNewReplicaSet / deployment_util.go SetNewReplicaSetAnnotations; the
        existing new ReplicaSet also takes the Deployment's minReadySeconds.
        """
        min_ready = d["spec"].get("minReadySeconds")
        if new_rs["spec"].get("minReadySeconds") != min_ready:
            if min_ready:
                new_rs["spec"]["minReadySeconds"] = min_ready
            else:
                new_rs["spec"].pop("minReadySeconds", None)
        annotations = new_rs["metadata"].setdefault("annotations", {})
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key not in SKIP_COPY:
                annotations[key] = value
        new_revision = max((revision_of(rs) for rs in old), default=0) + 1
        old_revision = annotations.get(REVISION)
        if int(old_revision or 0) < new_revision:
            annotations[REVISION] = str(new_revision)
            if old_revision:
                history = annotations.get(REVISION_HISTORY)
                annotations[REVISION_HISTORY] = (
                    f"{history},{old_revision}" if history else old_revision
                )

    # --- scaling ---------------------------------------------------------------------------

    def _scale(self, d: Obj, rs: Obj, replicas: int) -> None:
        if _spec(rs) == replicas:
            return
        surge, _ = resolve_fenceposts(d["spec"])
        rs["spec"]["replicas"] = replicas
        annotations = rs["metadata"].setdefault("annotations", {})
        annotations[DESIRED_REPLICAS] = str(d["spec"]["replicas"])
        annotations[MAX_REPLICAS] = str(d["spec"]["replicas"] + surge)

    def _scale_rolling(self, d: Obj, new_rs: Obj | None, old: list[Obj], now: float) -> None:
        assert new_rs is not None
        desired = d["spec"]["replicas"]
        surge, unavailable = resolve_fenceposts(d["spec"])
        everyone = [new_rs, *old]
        if _spec(new_rs) > desired:
            self._scale(d, new_rs, desired)
        elif _spec(new_rs) < desired:
            room = desired + surge - sum(_spec(rs) for rs in everyone)
            if room > 0:
                self._scale(d, new_rs, _spec(new_rs) + min(room, desired - _spec(new_rs)))
        min_available = desired - min(unavailable, desired)
        new_unavailable = _spec(new_rs) - _available(new_rs)
        budget = sum(_spec(rs) for rs in everyone) - min_available - new_unavailable
        if budget <= 0 or not any(_spec(rs) for rs in old):
            return
        for rs in old:
            unhealthy = min(budget, _spec(rs) - _available(rs))
            if unhealthy > 0:
                self._scale(d, rs, _spec(rs) - unhealthy)
                budget -= unhealthy
        excess = sum(_available(rs) for rs in everyone) - min_available
        for rs in old:
            step = min(_spec(rs), excess)
            if step > 0:
                self._scale(d, rs, _spec(rs) - step)
                excess -= step

    def _scale_recreate(self, d: Obj, new_rs: Obj | None, old: list[Obj], now: float) -> None:
        """recreate.go rolloutRecreate: scale the old down; the new up only once no old pod runs."""
        for rs in old:
            self._scale(d, rs, 0)
        if new_rs is not None and not self._old_pods_running(new_rs, old):
            self._scale(d, new_rs, d["spec"]["replicas"])

    def _old_pods_running(self, new_rs: Obj | None, old: list[Obj]) -> bool:
        """recreate.go oldPodsRunning: old ReplicaSets' pods, terminating ones included, count."""
        if any(rs["status"].get("replicas", 0) for rs in old):
            return True
        return any(
            pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            for rs in old
            for pod in self.replicas.pods_of(rs)
        )

    def _scale_paused(self, d: Obj, new_rs: Obj | None, old: list[Obj], now: float) -> None:
        active = [rs for rs in (new_rs, *old) if rs is not None and _spec(rs) > 0]
        target = active[0] if len(active) == 1 else (new_rs if not active else None)
        if target is not None:
            self._scale(d, target, d["spec"]["replicas"])

    # --- replica readiness -------------------------------------------------------------------

    def _write_changed(self, owned: list[Obj], before: dict[str, Obj]) -> bool:
        changed = False
        for rs in owned:
            if rs != before[rs["metadata"]["uid"]]:
                self.store.update("replicasets", rs, check_version=False)
                changed = True
        return changed

    def _cleanup(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> bool:
        """Delete old ReplicaSets beyond revisionHistoryLimit, lowest revisions first."""
        if not self._complete(d, d["status"]):
            return False
        limit = int(d["spec"].get("revisionHistoryLimit", 10))
        extra = sorted(old, key=revision_of)[: max(0, len(old) - limit)]
        removed = False
        for rs in extra:
            fresh = self.store.find(
                "replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]
            )
            if fresh and not _spec(fresh) and not fresh["status"].get("replicas"):
                gone = self.store.delete(
                    "replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]
                )
                self.replicas.forget(gone)
                removed = True
        return removed

    # --- Deployment status -------------------------------------------------------------------

    @staticmethod
    def _complete(d: Obj, status: Obj) -> bool:
        desired = d["spec"]["replicas"]
        return bool(
            status.get("updatedReplicas", 0) == desired
            and status.get("replicas", 0) == desired
            and status.get("availableReplicas", 0) == desired
            and status.get("observedGeneration", 0) >= d["metadata"]["generation"]
        )

    def _progress(
        self, d: Obj, status: Obj, reason: str, message: str, now: float, *, force: bool = False
    ) -> None:
        stamp = timestamp(now)
        condition = {
            "type": PROGRESSING,
            "status": "True",
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }
        _set_condition(status, condition, force=force)
        self._progress_at[d["metadata"]["uid"]] = now

    def _write_deployment(self, d: Obj, new_rs: Obj | None, owned: list[Obj], now: float) -> bool:
        old_status = d["status"]
        status = self._calculate_status(d, new_rs, owned, now)
        self._rollout_conditions(d, old_status, status, new_rs, now)
        d["status"] = status
        if new_rs is not None and not d["spec"].get("paused"):
            d["metadata"].setdefault("annotations", {})[REVISION] = str(revision_of(new_rs))
        stored = self.store.find("deployments", d["metadata"]["namespace"], d["metadata"]["name"])
        if stored is None or (stored["status"], stored["metadata"].get("annotations")) == (
            status,
            d["metadata"].get("annotations"),
        ):
            return False
        stored["metadata"]["annotations"] = d["metadata"].get("annotations")
        stored["status"] = status
        self.store.update("deployments", stored, check_version=False)
        return True

    def _calculate_status(self, d: Obj, new_rs: Obj | None, owned: list[Obj], now: float) -> Obj:
        spec_total = sum(_spec(rs) for rs in owned)
        available = sum(_available(rs) for rs in owned)
        status = {
            "observedGeneration": d["metadata"]["generation"],
            "replicas": sum(rs["status"].get("replicas", 0) for rs in owned),
            "updatedReplicas": new_rs["status"].get("replicas", 0) if new_rs else 0,
            "readyReplicas": sum(rs["status"].get("readyReplicas", 0) for rs in owned),
            "availableReplicas": available,
            "unavailableReplicas": max(0, spec_total - available),
        }
        status = {k: v for k, v in status.items() if v}
        for key in ("conditions", "collisionCount"):
            if key in d["status"]:
                status[key] = copy.deepcopy(d["status"][key])
        desired = d["spec"]["replicas"]
        rolling = d["spec"].get("strategy", {}).get("type") != "Recreate"
        max_unavailable = min(resolve_fenceposts(d["spec"])[1], desired) if rolling else 0
        ok = available >= desired - max_unavailable
        stamp = timestamp(now)
        condition = {
            "type": AVAILABLE,
            "status": "True" if ok else "False",
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
            "reason": "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
            "message": f"Deployment {'has' if ok else 'does not have'} minimum availability.",
        }
        _set_condition(status, condition)
        return status

    def _rollout_conditions(
        self, d: Obj, old: Obj, status: Obj, new_rs: Obj | None, now: float
    ) -> None:
        current = _condition(status, PROGRESSING)
        if d["spec"].get("paused") or (current and current["reason"] == "DeploymentPaused"):
            self._paused_condition(d, status, current, now)
            if d["spec"].get("paused"):
                return
        rs_name = new_rs["metadata"]["name"] if new_rs else d["metadata"]["name"]
        current = _condition(status, PROGRESSING)
        settled = (
            status.get("replicas", 0) == status.get("updatedReplicas", 0)
            and current is not None
            and current["reason"] == "NewReplicaSetAvailable"
        )
        if settled:
            return
        if self._complete(d, status):
            message = f'ReplicaSet "{rs_name}" has successfully progressed.'
            self._progress(d, status, "NewReplicaSetAvailable", message, now)
        elif self._progressing(old, status):
            message = f'ReplicaSet "{rs_name}" is progressing.'
            self._progress(d, status, "ReplicaSetUpdated", message, now, force=True)
        elif self._timed_out(d, current, now):
            stamp = timestamp(now)
            condition = {
                "type": PROGRESSING,
                "status": "False",
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{rs_name}" has timed out progressing.',
            }
            _set_condition(status, condition)

    def _paused_condition(self, d: Obj, status: Obj, current: Obj | None, now: float) -> None:
        if current and current["reason"] == "ProgressDeadlineExceeded":
            return
        paused = bool(d["spec"].get("paused"))
        was_paused = current is not None and current["reason"] == "DeploymentPaused"
        if paused == was_paused:
            return
        stamp = timestamp(now)
        condition = {
            "type": PROGRESSING,
            "status": "Unknown",
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
            "reason": "DeploymentPaused" if paused else "DeploymentResumed",
            "message": "Deployment is paused" if paused else "Deployment is resumed",
        }
        _set_condition(status, condition)
        self._progress_at[d["metadata"]["uid"]] = now

    @staticmethod
    def _progressing(old: Obj, new: Obj) -> bool:
        old_olds = old.get("replicas", 0) - old.get("updatedReplicas", 0)
        new_olds = new.get("replicas", 0) - new.get("updatedReplicas", 0)
        return bool(
            new.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
            or new_olds < old_olds
            or new.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or new.get("availableReplicas", 0) > old.get("availableReplicas", 0)
        )

    def _timed_out(self, d: Obj, current: Obj | None, now: float) -> bool:
        if current is None or current["reason"] == "NewReplicaSetAvailable":
            return False
        if current["reason"] == "ProgressDeadlineExceeded":
            return True
        key = (d["metadata"]["namespace"], d["metadata"]["name"])
        deadline = 0 if key in self.failing else d["spec"].get("progressDeadlineSeconds", 600)
        since = self._progress_at.get(d["metadata"]["uid"], -math.inf)
        return bool(since + deadline <= now)
