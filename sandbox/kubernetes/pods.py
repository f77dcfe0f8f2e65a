"""Pods, the ReplicaSet controller that makes them and the kubelet that runs and ends them.

ReplicaSet controller (kubernetes pkg/controller/replicaset/replica_set.go,
`manageReplicas`, and replica_set_utils.go, `calculateStatus`): it counts the
*active* pods a ReplicaSet controls (`controller.FilterActivePods`: a pod with a
deletionTimestamp, or Succeeded/Failed, is not active), creates pods up to
spec.replicas and deletes the surplus in `getPodsToDelete` order (pending
before running, not ready before ready, ready for less time first, newest
first: pkg/controller/controller_utils.go `ActivePodsWithRanks`). Its status
counts active pods only: replicas, readyReplicas, and availableReplicas, ready
for at least spec.minReadySeconds (pkg/api/v1/pod/util.go `IsPodAvailable`).
It notices a changed ReplicaSet `replica_set_delay` seconds late, standing in
for informer and work-queue latency, so the Deployment status the deployment
controller writes in between (stale conditions included) can be observed.

Deletion is graceful (staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go
`BeforeDelete`): the pod gets deletionTimestamp = now + grace period and
deletionGracePeriodSeconds, stays listed while it terminates, and the kubelet
removes it when its containers have exited: `terminate_delay` seconds after
the deletion, or at the end of the grace period if that comes first (the
kubelet kills what is left then).

The kubelet makes a pod Ready `ready_delay` seconds after it was created,
unless its Deployment is blocked (see controller.py) or one of its images is
in `broken_images` (a release that never starts); the Ready condition's
lastTransitionTime is when that happened, as `IsPodAvailable` reads it.
"""

from __future__ import annotations

import copy
import math
import random
import string
from dataclasses import dataclass, field

from sandbox.kubernetes.objects import Obj, controlled_by, parse_time, timestamp
from sandbox.kubernetes.store import Store

NODE = "sandbox-node"


def is_terminating(pod: Obj) -> bool:
    """Tell whether a pod is being deleted (it has a deletionTimestamp)."""
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """controller.IsPodActive: not Succeeded/Failed and no deletionTimestamp."""
    phase = pod.get("status", {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def ready_since(pod: Obj) -> float | None:
    """Return when the pod became Ready, or None if it is not Ready."""
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return parse_time(condition["lastTransitionTime"])
    return None


@dataclass
class PodTimes:
    """Sub-second times the stand-in keeps beside the stored (whole-second) timestamps."""

    ready_at: dict[str, float] = field(default_factory=dict)
    became_ready: dict[str, float] = field(default_factory=dict)
    deleted_at: dict[str, float] = field(default_factory=dict)


class ReplicaSets:
    """The ReplicaSet controller and the kubelet, over the shared Store."""

    def __init__(self, store: Store, *, ready_delay: float) -> None:
        self.store = store
        self.ready_delay = ready_delay
        self.replica_set_delay = 0.0
        self.terminate_delay = 0.0
        self.broken_images: set[str] = set()
        self.times = PodTimes()
        self._seen: dict[str, tuple[int, float]] = {}

    # --- queries --------------------------------------------------------------------------------

    def pods_of(self, rs: Obj) -> list[Obj]:
        """All pods (terminating ones included) the ReplicaSet controls."""
        return [
            p for p in self.store.list("pods", rs["metadata"]["namespace"]) if controlled_by(p, rs)
        ]

    def available(self, pod: Obj, min_ready: int, now: float, *, settle: bool) -> bool:
        """podutil.IsPodAvailable: Ready, for longer than minReadySeconds."""
        since = self.times.became_ready.get(pod["metadata"]["uid"], ready_since(pod))
        if since is None:
            return False
        return settle or min_ready == 0 or since + min_ready < now

    # --- the ReplicaSet controller -----------------------------------------------------------

    def sync(self, rs: Obj, *, blocked: bool, settle: bool) -> bool:
        """Reconcile one ReplicaSet's pods and status; return whether anything changed."""
        now = self.store.clock()
        uid, wanted = rs["metadata"]["uid"], int(rs["spec"].get("replicas", 0))
        seen, since = self._seen.get(uid, (None, now))
        if seen != wanted:
            since = now
            self._seen[uid] = (wanted, since)
        if not settle and now < since + self.replica_set_delay:
            return False
        changed = self._manage(rs, wanted, now)
        changed |= self._kubelet(rs, blocked=blocked, now=now, settle=settle)
        return self._write_status(rs, now, settle=settle) or changed

    def _manage(self, rs: Obj, wanted: int, now: float) -> bool:
        active = [p for p in self.pods_of(rs) if is_active(p)]
        if len(active) < wanted:
            for _ in range(wanted - len(active)):
                self._create_pod(rs, now)
            return True
        if len(active) > wanted:
            for pod in sorted(active, key=lambda p: self._deletion_rank(p))[: len(active) - wanted]:
                self.delete_pod(pod, now)
            return True
        return False

    def _deletion_rank(self, pod: Obj) -> tuple[int, int, float, float]:
        running = pod.get("status", {}).get("phase") == "Running"
        since = ready_since(pod)
        created = parse_time(pod["metadata"]["creationTimestamp"])
        return (int(running), int(since is not None), -(since or 0.0), -created)

    def _create_pod(self, rs: Obj, now: float) -> None:
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{rs['metadata']['name']}-{suffix}"
        self.create_pod(rs, rs["spec"]["template"], name=name, now=now)

    def create_pod(
        self,
        owner: Obj,
        template: Obj,
        *,
        name: str,
        now: float,
        labels: dict[str, str] | None = None,
        node: str = NODE,
    ) -> Obj:
        """Create a pod from `template`, controlled by `owner`, due to become Ready later."""
        template = copy.deepcopy(template)
        reference = {
            "apiVersion": owner.get("apiVersion", "apps/v1"),
            "kind": owner.get("kind", "ReplicaSet"),
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        meta = template.get("metadata") or {}
        pod = {
            "metadata": {
                "name": name,
                "namespace": owner["metadata"]["namespace"],
                "labels": {**(meta.get("labels") or {}), **(labels or {})},
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [reference],
            },
            "spec": dict(template["spec"], nodeName=node),
            "status": {"phase": "Pending"},
        }
        created = self.store.create("pods", pod)
        self.times.ready_at[created["metadata"]["uid"]] = now + self.ready_delay
        return created

    def delete_pod(self, pod: Obj, now: float, *, grace: int | None = None) -> Obj:
        """Delete gracefully: set deletionTimestamp and the grace period, keep the pod listed."""
        if is_terminating(pod):
            return pod
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        pod["metadata"]["deletionTimestamp"] = timestamp(math.ceil(now + grace))
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
        self.times.deleted_at[pod["metadata"]["uid"]] = now
        return self.store.update("pods", pod, check_version=False)

    def terminate(self, pod: Obj, grace: int) -> Obj:
        """A DELETE of the pod through the API, with this grace period."""
        return self.delete_pod(pod, self.store.clock(), grace=grace)

    # --- the kubelet -------------------------------------------------------------------------

    def _kubelet(self, rs: Obj, *, blocked: bool, now: float, settle: bool) -> bool:
        return self.kubelet(self.pods_of(rs), blocked=blocked, now=now, settle=settle)

    def kubelet(self, pods: list[Obj], *, blocked: bool, now: float, settle: bool) -> bool:
        """Run and end `pods`: Ready when due, removed when their containers have exited."""
        changed = False
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if is_terminating(pod):
                grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 30))
                gone_at = self.times.deleted_at.get(uid, now) + min(grace, self.terminate_delay)
                if settle or gone_at <= now:
                    self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                    for times in (
                        self.times.ready_at,
                        self.times.became_ready,
                        self.times.deleted_at,
                    ):
                        times.pop(uid, None)
                    changed = True
                continue
            if ready_since(pod) is not None or blocked or self._broken(pod):
                continue
            if settle or self.times.ready_at.get(uid, now) <= now:
                self._make_ready(pod, now)
                changed = True
        return changed

    def _broken(self, pod: Obj) -> bool:
        images = {c.get("image") for c in pod["spec"].get("containers") or []}
        return bool(images & self.broken_images)

    def _make_ready(self, pod: Obj, now: float) -> None:
        stamp = timestamp(now)
        pod["status"] = {
            "phase": "Running",
            "startTime": stamp,
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": stamp}
                for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
        }
        self.times.became_ready[pod["metadata"]["uid"]] = now
        self.store.update("pods", pod, check_version=False)

    # --- ReplicaSet status -------------------------------------------------------------------

    def _write_status(self, rs: Obj, now: float, *, settle: bool) -> bool:
        stored = self.store.find("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
        if stored is None:
            return False
        active = [p for p in self.pods_of(stored) if is_active(p)]
        min_ready = int(stored["spec"].get("minReadySeconds", 0))
        ready = [p for p in active if ready_since(p) is not None]
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(active),
            "readyReplicas": len(ready),
            "availableReplicas": sum(
                self.available(p, min_ready, now, settle=settle) for p in ready
            ),
            "observedGeneration": stored["metadata"]["generation"],
        }
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        if stored["status"] == status:
            return False
        stored["status"] = status
        self.store.update("replicasets", stored, check_version=False)
        return True

    def forget(self, rs: Obj) -> None:
        """Garbage-collect a deleted ReplicaSet's pods (background deletion: gracefully)."""
        self._seen.pop(rs["metadata"]["uid"], None)
        now = self.store.clock()
        for pod in self.pods_of(rs):
            self.delete_pod(pod, now)
