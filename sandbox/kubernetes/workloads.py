"""StatefulSet and DaemonSet controllers with their ControllerRevision history.

History (pkg/controller/history/controller_history.go): a revision's data is
the workload's getPatch, {"spec":{"template":{...,"$patch":"replace"}}} as Go
encodes it (objects.revision_patch); its name is `<owner>-<hash>`; it carries
the template's labels, a controller ownerReference and an increasing
`revision`. When the template goes back to an earlier one, the equal
revision is not copied but renumbered to the next revision (StatefulSet:
stateful_set_control.go getStatefulSetRevisions with FindEqualRevisions and
UpdateControllerRevision; DaemonSet: update.go constructHistory, which bumps
the current history's revision), which is what `kubectl rollout undo
statefulset|daemonset` relies on. Revisions no pod, current or update
revision uses are deleted beyond revisionHistoryLimit, oldest first
(truncateHistory / cleanupHistory).

StatefulSet (stateful_set_control.go updateStatefulSet): pods `<set>-<ordinal>`
labelled `controller-revision-hash: <revision name>`; a missing pod is created
from the current revision when its ordinal is below the RollingUpdate
partition, else from the update revision (newVersionedStatefulSetPod);
OrderedReady creates one at a time, each after the previous is Running and
Ready, Parallel all at once; surplus ordinals are deleted highest first;
RollingUpdate deletes the highest-ordinal pod not at the update revision,
down to the partition, one at a time and only while every pod is healthy;
OnDelete never replaces a pod. When all replicas are updated and ready the
current revision becomes the update revision (completeRollingUpdate).

DaemonSet (pkg/controller/daemon/daemon_controller.go, update.go): one pod
per node (`nodes`), labelled `controller-revision-hash: <hash>`; the hash is
the stand-in's pod-template hash of the template and collisionCount
(controller.ComputeHash hashes the Go struct, which cannot be reproduced
here, so names differ from a real cluster's but behave the same);
RollingUpdate deletes old pods while fewer than maxUnavailable pods are
unavailable (rollingUpdate); OnDelete does not.
"""

from __future__ import annotations

import copy
import json
import random
import string

from sandbox.kubernetes.objects import (
    Obj,
    controlled_by,
    go_json,
    hash_controller_revision,
    parse_time,
    revision_patch,
    template_hash,
)
from sandbox.kubernetes.pods import ReplicaSets, is_terminating, ready_since
from sandbox.kubernetes.store import Store

HASH = "controller.kubernetes.io/hash"
POD_REVISION = "controller-revision-hash"
NODES = ("sandbox-node-1", "sandbox-node-2")


def _revision_key(rev: Obj) -> tuple[int, float, str]:
    meta = rev["metadata"]
    return (int(rev.get("revision", 0)), parse_time(meta["creationTimestamp"]), meta["name"])


def template_of(revision: Obj) -> Obj:
    """The pod template a revision restores."""
    template = copy.deepcopy(revision["data"]["spec"]["template"])
    template.pop("$patch", None)
    template["metadata"] = {
        k: v for k, v in (template.get("metadata") or {}).items() if k != "creationTimestamp"
    }
    return template


class Workloads:
    """The StatefulSet and DaemonSet controllers, over the shared Store and pods."""

    def __init__(self, store: Store, pods: ReplicaSets) -> None:
        self.store = store
        self.pods = pods
        self.nodes: tuple[str, ...] = NODES

    def sync_all(self, *, settle: bool = False) -> None:
        """Reconcile every StatefulSet and DaemonSet until nothing more changes at this instant."""
        with self.store.cond:
            for resource in ("statefulsets", "daemonsets"):
                for obj in self.store.list(resource):
                    meta = obj["metadata"]
                    self.sync(resource, meta["namespace"], meta["name"], settle=settle)

    def sync(self, resource: str, namespace: str, name: str, *, settle: bool = False) -> None:
        """Reconcile one workload until nothing more changes at this instant."""
        run = self._stateful_step if resource == "statefulsets" else self._daemon_step
        with self.store.cond:
            for _ in range(200):
                obj = self.store.find(resource, namespace, name)
                if obj is None or not run(obj, settle=settle):
                    return

    # --- history ---------------------------------------------------------------------------

    def revisions(self, owner: Obj) -> list[Obj]:
        """The ControllerRevisions `owner` controls, by revision."""
        owned = [
            r
            for r in self.store.list("controllerrevisions", owner["metadata"]["namespace"])
            if controlled_by(r, owner)
        ]
        return sorted(owned, key=_revision_key)

    def _new_revision(
        self, owner: Obj, *, name: str, raw: bytes, number: int, labels: dict[str, str]
    ) -> Obj:
        reference = {
            "apiVersion": "apps/v1",
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        template_labels = owner["spec"]["template"].get("metadata", {}).get("labels") or {}
        revision = {
            "metadata": {
                "name": name,
                "namespace": owner["metadata"]["namespace"],
                "labels": {**template_labels, **labels},
                "ownerReferences": [reference],
            },
            "data": json.loads(raw),
            "revision": number,
        }
        return self.store.create("controllerrevisions", revision)

    def _renumber(self, revision: Obj, number: int) -> Obj:
        if int(revision.get("revision", 0)) == number:
            return revision
        revision["revision"] = number
        return self.store.update("controllerrevisions", revision, check_version=False)

    def _truncate(self, owner: Obj, revisions: list[Obj], live: set[str]) -> bool:
        limit = int(owner["spec"].get("revisionHistoryLimit", 10))
        history = [r for r in revisions if r["metadata"]["name"] not in live]
        extra = history[: max(0, len(history) - limit)]
        for revision in extra:
            self.store.delete(
                "controllerrevisions",
                revision["metadata"]["namespace"],
                revision["metadata"]["name"],
            )
        return bool(extra)

    # --- StatefulSet -------------------------------------------------------------------------

    def _stateful_revisions(self, sts: Obj) -> tuple[Obj, Obj, bool]:
        """getStatefulSetRevisions: return (current, update, changed)."""
        revisions = self.revisions(sts)
        collisions = int(sts["status"].get("collisionCount", 0))
        raw = revision_patch(sts)
        number = int(revisions[-1].get("revision", 0)) + 1 if revisions else 1
        equal = [r for r in revisions if go_json(r["data"]) == raw]
        changed = False
        if equal and equal[-1]["metadata"]["name"] == revisions[-1]["metadata"]["name"]:
            update = equal[-1]
        elif equal:
            update = self._renumber(equal[-1], number)
            changed = True
        else:
            while True:
                digest = hash_controller_revision(raw, collisions)
                name = f"{sts['metadata']['name'][:223]}-{digest}"
                existing = self.store.find(
                    "controllerrevisions", sts["metadata"]["namespace"], name
                )
                if existing is None:
                    update = self._new_revision(
                        sts, name=name, raw=raw, number=number, labels={HASH: digest}
                    )
                    break
                if go_json(existing["data"]) == raw:
                    update = existing
                    break
                collisions += 1
            changed = True
        current_name = sts["status"].get("currentRevision")
        current = next(
            (r for r in self.revisions(sts) if r["metadata"]["name"] == current_name), update
        )
        if collisions != int(sts["status"].get("collisionCount", 0)):
            sts["status"]["collisionCount"] = collisions
        return current, update, changed

    def _stateful_step(self, sts: Obj, *, settle: bool) -> bool:
        now = self.store.clock()
        current, update, changed = self._stateful_revisions(sts)
        namespace = sts["metadata"]["namespace"]
        owned = [p for p in self.store.list("pods", namespace) if controlled_by(p, sts)]
        changed |= self.pods.kubelet(owned, blocked=False, now=now, settle=settle)
        pods = {
            p["metadata"]["name"]: p
            for p in self.store.list("pods", namespace)
            if controlled_by(p, sts)
        }
        spec = sts["spec"]
        replicas = int(spec["replicas"])
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0)) if rolling else 0
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        changed |= self._stateful_pods(
            sts,
            pods,
            current,
            update,
            replicas=replicas,
            partition=partition,
            ordered=ordered,
            now=now,
        )
        if rolling and not changed:
            changed |= self._stateful_update(
                sts, pods, update, replicas=replicas, partition=partition, now=now
            )
        live = {current["metadata"]["name"], update["metadata"]["name"]}
        live |= {p["metadata"]["labels"].get(POD_REVISION, "") for p in pods.values()}
        changed |= self._truncate(sts, self.revisions(sts), live)
        return (
            self._stateful_status(sts, current, update, rolling=rolling, now=now, settle=settle)
            or changed
        )

    def _healthy(self, pod: Obj) -> bool:
        return not is_terminating(pod) and ready_since(pod) is not None

    def _stateful_pods(
        self,
        sts: Obj,
        pods: dict[str, Obj],
        current: Obj,
        update: Obj,
        *,
        replicas: int,
        partition: int,
        ordered: bool,
        now: float,
    ) -> bool:
        name = sts["metadata"]["name"]
        for ordinal in range(replicas):
            pod_name = f"{name}-{ordinal}"
            pod = pods.get(pod_name)
            if pod is None:
                revision = current if ordinal < partition else update
                labels = {
                    POD_REVISION: revision["metadata"]["name"],
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                }
                self.pods.create_pod(
                    sts, template_of(revision), name=pod_name, now=now, labels=labels
                )
                return True
            if ordered and not self._healthy(pod):
                return False
        condemned = sorted(
            (p for n, p in pods.items() if int(n.rsplit("-", 1)[-1]) >= replicas),
            key=lambda p: -int(p["metadata"]["name"].rsplit("-", 1)[-1]),
        )
        for pod in condemned:
            if is_terminating(pod):
                if ordered:
                    return False
                continue
            if ordered and not all(self._healthy(p) for p in pods.values() if p is not pod):
                return False
            self.pods.delete_pod(pod, now)
            return True
        return False

    def _stateful_update(
        self,
        sts: Obj,
        pods: dict[str, Obj],
        update: Obj,
        *,
        replicas: int,
        partition: int,
        now: float,
    ) -> bool:
        if not all(self._healthy(p) for p in pods.values()):
            return False
        for ordinal in range(replicas - 1, partition - 1, -1):
            pod = pods.get(f"{sts['metadata']['name']}-{ordinal}")
            if pod is None:
                return False
            if pod["metadata"]["labels"].get(POD_REVISION) != update["metadata"]["name"]:
                self.pods.delete_pod(pod, now)
                return True
        return False

    def _stateful_status(
        self, sts: Obj, current: Obj, update: Obj, *, rolling: bool, now: float, settle: bool
    ) -> bool:
        namespace = sts["metadata"]["namespace"]
        pods = [p for p in self.store.list("pods", namespace) if controlled_by(p, sts)]
        min_ready = int(sts["spec"].get("minReadySeconds", 0))
        active = [p for p in pods if not is_terminating(p)]
        ready = [p for p in pods if ready_since(p) is not None]
        status: Obj = {
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": len(pods),
            "readyReplicas": len(ready),
            "availableReplicas": sum(
                self.pods.available(p, min_ready, now, settle=settle) for p in ready
            ),
            "currentReplicas": sum(
                p["metadata"]["labels"].get(POD_REVISION) == current["metadata"]["name"]
                for p in active
            ),
            "updatedReplicas": sum(
                p["metadata"]["labels"].get(POD_REVISION) == update["metadata"]["name"]
                for p in active
            ),
            "currentRevision": current["metadata"]["name"],
            "updateRevision": update["metadata"]["name"],
            "collisionCount": int(sts["status"].get("collisionCount", 0)),
        }
        if (
            rolling
            and status["updatedReplicas"] == status["replicas"]
            and status["readyReplicas"] == status["replicas"]
        ):
            status["currentReplicas"] = status["updatedReplicas"]
            status["currentRevision"] = status["updateRevision"]
        status = {k: v for k, v in status.items() if v or k in ("replicas", "availableReplicas")}
        stored = self.store.find("statefulsets", namespace, sts["metadata"]["name"])
        if stored is None or stored["status"] == status:
            return False
        stored["status"] = status
        self.store.update("statefulsets", stored, check_version=False)
        return True

    # --- DaemonSet ----------------------------------------------------------------------------

    def _daemon_history(self, ds: Obj) -> tuple[Obj, bool]:
        """constructHistory: the current revision, created or renumbered as needed."""
        revisions = self.revisions(ds)
        collisions = int(ds["status"].get("collisionCount", 0))
        digest = template_hash(ds["spec"]["template"], collisions)
        current = [r for r in revisions if r["metadata"]["labels"].get(POD_REVISION) == digest]
        old = [r for r in revisions if r not in current]
        number = max((int(r.get("revision", 0)) for r in old), default=0) + 1
        if current:
            keep = current[-1]
            for duplicate in current[:-1]:
                self.store.delete(
                    "controllerrevisions",
                    duplicate["metadata"]["namespace"],
                    duplicate["metadata"]["name"],
                )
            if int(keep.get("revision", 0)) < number:
                return self._renumber(keep, number), True
            return keep, bool(current[:-1])
        raw = revision_patch(ds)
        name = f"{ds['metadata']['name']}-{digest}"
        created = self._new_revision(
            ds, name=name, raw=raw, number=number, labels={POD_REVISION: digest}
        )
        return created, True

    def _daemon_step(self, ds: Obj, *, settle: bool) -> bool:
        now = self.store.clock()
        current, changed = self._daemon_history(ds)
        namespace = ds["metadata"]["namespace"]
        digest = current["metadata"]["labels"][POD_REVISION]
        pods = [p for p in self.store.list("pods", namespace) if controlled_by(p, ds)]
        changed |= self.pods.kubelet(pods, blocked=False, now=now, settle=settle)
        pods = [p for p in self.store.list("pods", namespace) if controlled_by(p, ds)]
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            by_node.setdefault(pod["spec"].get("nodeName", ""), []).append(pod)
        for node in self.nodes:
            # daemon_controller.go podsShouldBeOnNode: pods being deleted do not count.
            if not [p for p in by_node.get(node, []) if not is_terminating(p)]:
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                labels = {
                    POD_REVISION: digest,
                    "pod-template-generation": str(ds["metadata"]["generation"]),
                }
                self.pods.create_pod(
                    ds,
                    template_of(current),
                    name=f"{ds['metadata']['name']}-{suffix}",
                    now=now,
                    labels=labels,
                    node=node,
                )
                changed = True
        strategy = ds["spec"].get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and not changed:
            changed |= self._daemon_update(ds, pods, digest, strategy, now=now, settle=settle)
        live = {current["metadata"]["name"]}
        live |= {
            f"{ds['metadata']['name']}-{p['metadata']['labels'].get(POD_REVISION)}" for p in pods
        }
        changed |= self._truncate(ds, self.revisions(ds), live)
        return self._daemon_status(ds, digest, now=now, settle=settle) or changed

    def _daemon_update(
        self, ds: Obj, pods: list[Obj], digest: str, strategy: Obj, *, now: float, settle: bool
    ) -> bool:
        budget = int((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1))
        min_ready = int(ds["spec"].get("minReadySeconds", 0))
        unavailable = sum(
            not self.pods.available(p, min_ready, now, settle=settle) or is_terminating(p)
            for p in pods
        )
        unavailable += sum(
            1 for node in self.nodes if not any(p["spec"].get("nodeName") == node for p in pods)
        )
        old = [
            p
            for p in pods
            if p["metadata"]["labels"].get(POD_REVISION) != digest and not is_terminating(p)
        ]
        old.sort(key=lambda p: self.pods.available(p, min_ready, now, settle=settle))
        changed = False
        for pod in old:
            available = self.pods.available(pod, min_ready, now, settle=settle)
            if available and unavailable >= budget:
                break
            self.pods.delete_pod(pod, now)
            unavailable += int(available)
            changed = True
        return changed

    def _daemon_status(self, ds: Obj, digest: str, *, now: float, settle: bool) -> bool:
        namespace = ds["metadata"]["namespace"]
        pods = [
            p
            for p in self.store.list("pods", namespace)
            if controlled_by(p, ds) and not is_terminating(p)
        ]
        min_ready = int(ds["spec"].get("minReadySeconds", 0))
        available = sum(self.pods.available(p, min_ready, now, settle=settle) for p in pods)
        desired = len(self.nodes)
        status: Obj = {
            "currentNumberScheduled": len({p["spec"].get("nodeName") for p in pods}),
            "numberMisscheduled": 0,
            "desiredNumberScheduled": desired,
            "numberReady": sum(ready_since(p) is not None for p in pods),
            "observedGeneration": ds["metadata"]["generation"],
            "updatedNumberScheduled": sum(
                p["metadata"]["labels"].get(POD_REVISION) == digest for p in pods
            ),
            "numberAvailable": available,
            "numberUnavailable": max(0, desired - available),
        }
        if ds["status"].get("collisionCount"):
            status["collisionCount"] = ds["status"]["collisionCount"]
        status = {
            k: v
            for k, v in status.items()
            if v
            or k
            in (
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
            )
        }
        stored = self.store.find("daemonsets", namespace, ds["metadata"]["name"])
        if stored is None or stored["status"] == status:
            return False
        stored["status"] = status
        self.store.update("daemonsets", stored, check_version=False)
        return True
