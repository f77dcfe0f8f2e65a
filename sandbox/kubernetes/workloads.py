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
OrderedReady (monotonic) creates one at a time and stops the whole pass at the
first pod that is terminating or not Running, Ready and available, the update
included: that is why a pod stuck on a bad revision stays after a revert until
someone deletes it (the documented "forced rollback"). Parallel (burst) creates
all at once and never stops there; surplus ordinals are deleted highest first;
RollingUpdate then deletes, from the highest ordinal down to the partition, the
first pod not at the update revision, healthy or not, and waits at an updated
pod that is unavailable (so a Parallel set replaces its stuck pod by itself);
OnDelete never replaces a pod. When all replicas are updated and ready the
current revision becomes the update revision (completeRollingUpdate).

DaemonSet (pkg/controller/daemon/daemon_controller.go, update.go): one pod
per node (`nodes`), labelled `controller-revision-hash: <hash>`; the hash is
the stand-in's pod-template hash of the template and collisionCount
(controller.ComputeHash hashes the Go struct, which cannot be reproduced
here, so names differ from a real cluster's but behave the same);
RollingUpdate follows update.go rollingUpdate: without maxSurge it deletes old
pods (unavailable ones at once, available ones while fewer than maxUnavailable
are unavailable) and the manage loop creates the new; with maxSurge it starts a
new pod beside an old one and deletes the old once the new is available.
Percent values resolve as intstr.GetScaledValueFromIntOrPercent; OnDelete
replaces nothing.
"""

from __future__ import annotations

import copy
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.kubernetes.objects import (
    Obj,
    controlled_by,
    go_json,
    hash_controller_revision,
    parse_time,
    revision_patch,
    scaled_value,
    template_hash,
)
from sandbox.kubernetes.pods import ReplicaSets, is_terminating, ready_since
from sandbox.kubernetes.store import Store

HASH = "controller.kubernetes.io/hash"
POD_REVISION = "controller-revision-hash"
NODES = ("sandbox-node-1", "sandbox-node-2")


@dataclass(frozen=True)
class _SetRules:
    """What one StatefulSet pass decides by: sizes, policy, and the time it runs at."""

    replicas: int
    partition: int
    monotonic: bool
    min_ready: int
    now: float
    settle: bool


OnNode = tuple[Obj | None, Obj | None] | None
"""(new pod, old pod) on a node, or None where it has more than one of either."""


def _on_node(pods: list[Obj], node: str, digest: str) -> OnNode:
    """update.go findUpdatedPodsOnNode: the node's new and old pod, terminating ones left out."""
    live = [p for p in pods if p["spec"].get("nodeName") == node and not is_terminating(p)]
    new = [p for p in live if p["metadata"]["labels"].get(POD_REVISION) == digest]
    old = [p for p in live if p["metadata"]["labels"].get(POD_REVISION) != digest]
    if len(new) > 1 or len(old) > 1:
        return None
    return (new[0] if new else None), (old[0] if old else None)


def _is_new(pod: Obj, digest: str) -> bool:
    return bool(pod["metadata"]["labels"].get(POD_REVISION) == digest)


def _revision_key(rev: Obj) -> tuple[int, float, str]:
    meta = rev["metadata"]
    return (int(rev.get("revision", 0)), parse_time(meta["creationTimestamp"]), meta["name"])


def template_of(revision: Obj) -> Obj:
    """The pod template a revision restores."""
    template: Obj = copy.deepcopy(revision["data"]["spec"]["template"])
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
        monotonic = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        rules = _SetRules(
            replicas=replicas,
            partition=partition,
            monotonic=monotonic,
            min_ready=int(spec.get("minReadySeconds", 0)),
            now=now,
            settle=settle,
        )
        created, stop = self._stateful_pods(sts, pods, current, update, rules)
        changed |= created
        if rolling and not stop:
            changed |= self._stateful_update(sts, pods, update, rules)
        live = {current["metadata"]["name"], update["metadata"]["name"]}
        live |= {p["metadata"]["labels"].get(POD_REVISION, "") for p in pods.values()}
        changed |= self._truncate(sts, self.revisions(sts), live)
        return (
            self._stateful_status(sts, current, update, rolling=rolling, now=now, settle=settle)
            or changed
        )

    def _unavailable(self, pod: Obj | None, rules: _SetRules) -> bool:
        """stateful_set_utils.go isUnavailable: not Running and available, or terminating."""
        if pod is None:
            return True
        available = self.pods.available(pod, rules.min_ready, rules.now, settle=rules.settle)
        return is_terminating(pod) or not available

    def _stateful_pods(
        self, sts: Obj, pods: dict[str, Obj], current: Obj, update: Obj, rules: _SetRules
    ) -> tuple[bool, bool]:
        """stateful_set_control.go updateStatefulSet up to the update: processReplica for each
        ordinal, then processCondemned; return (changed, stop) where stop is runForAll's
        shouldExit (monotonic mode blocked on a pod) and ends the pass before the update."""
        name = sts["metadata"]["name"]
        changed = False
        for ordinal in range(rules.replicas):
            pod = pods.get(f"{name}-{ordinal}")
            if pod is None:
                # newVersionedStatefulSetPod: below the partition from the current revision.
                revision = current if ordinal < rules.partition else update
                labels = {
                    POD_REVISION: revision["metadata"]["name"],
                    "statefulset.kubernetes.io/pod-name": f"{name}-{ordinal}",
                    "apps.kubernetes.io/pod-index": str(ordinal),
                }
                self.pods.create_pod(
                    sts,
                    template_of(revision),
                    name=f"{name}-{ordinal}",
                    now=rules.now,
                    labels=labels,
                )
                changed = True
                if rules.monotonic:
                    return True, True  # processReplica: a monotonic set creates one pod per pass
                continue
            # processReplica: in monotonic (OrderedReady) mode a terminating pod, or one not
            # Running and Ready (and available), blocks everything after it, the update too.
            if rules.monotonic and (is_terminating(pod) or self._unavailable(pod, rules)):
                return changed, True
        # processCondemned: ordinals beyond replicas go, highest first; monotonic mode one at a
        # time, waiting for terminating ones and for every other pod but the first unhealthy one.
        condemned = sorted(
            (p for n, p in pods.items() if int(n.rsplit("-", 1)[-1]) >= rules.replicas),
            key=lambda p: -int(p["metadata"]["name"].rsplit("-", 1)[-1]),
        )
        ordered = [pods.get(f"{name}-{o}") for o in range(rules.replicas)] + condemned[::-1]
        first_unhealthy = next((p for p in ordered if self._unavailable(p, rules)), None)
        for pod in condemned:
            if is_terminating(pod):
                if rules.monotonic:
                    return changed, True
                continue
            if rules.monotonic and pod is not first_unhealthy and self._unavailable(pod, rules):
                return changed, True
            self.pods.delete_pod(pod, rules.now)
            changed = True
            if rules.monotonic:
                return True, True
        return changed, False

    def _stateful_update(
        self, sts: Obj, pods: dict[str, Obj], update: Obj, rules: _SetRules
    ) -> bool:
        """The RollingUpdate tail of updateStatefulSet (MaxUnavailableStatefulSet gate off, its
        default): from the highest ordinal down to the partition, delete the first pod not at
        the update revision, healthy or not; stop at an updated pod that is unavailable.

        Both policies reach this only when processReplica let them through; for Parallel that
        is always, which is why upstream replaces a stuck pod of a Parallel set by itself.
        """
        for ordinal in range(rules.replicas - 1, rules.partition - 1, -1):
            pod = pods.get(f"{sts['metadata']['name']}-{ordinal}")
            if pod is None:
                return False
            at_update = pod["metadata"]["labels"].get(POD_REVISION) == update["metadata"]["name"]
            if not at_update and not is_terminating(pod):
                self.pods.delete_pod(pod, rules.now)
                return True
            if self._unavailable(pod, rules):
                return False
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
                self._daemon_pod(ds, current, node, now)
                changed = True
        strategy = ds["spec"].get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and not changed:
            changed |= self._daemon_update(ds, current, pods, now=now, settle=settle)
        live = {current["metadata"]["name"]}
        live |= {
            f"{ds['metadata']['name']}-{p['metadata']['labels'].get(POD_REVISION)}" for p in pods
        }
        changed |= self._truncate(ds, self.revisions(ds), live)
        return self._daemon_status(ds, digest, now=now, settle=settle) or changed

    def _daemon_pod(self, ds: Obj, current: Obj, node: str, now: float) -> None:
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        labels = {
            POD_REVISION: current["metadata"]["labels"][POD_REVISION],
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

    def _daemon_update(
        self, ds: Obj, current: Obj, pods: list[Obj], *, now: float, settle: bool
    ) -> bool:
        """update.go rollingUpdate, both paths, over what findUpdatedPodsOnNode finds per node.

        maxSurge and maxUnavailable are resolved by updatedDesiredNodeCounts (util.SurgeCount,
        util.UnavailableCount: intstr.GetScaledValueFromIntOrPercent rounding up; both 0 means
        maxUnavailable 1). A value that does not resolve is the controller's error for this
        DaemonSet: it changes nothing and tries again, as upstream requeues.
        """
        rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        desired = len(self.nodes)
        try:
            surge = scaled_value(rolling.get("maxSurge"), desired, round_up=True)
            unavailable_max = scaled_value(rolling.get("maxUnavailable"), desired, round_up=True)
        except ValueError:
            return False
        if desired > 0 and surge == 0 and unavailable_max == 0:
            unavailable_max = 1
        digest = current["metadata"]["labels"][POD_REVISION]
        min_ready = int(ds["spec"].get("minReadySeconds", 0))

        def available(pod: Obj) -> bool:
            return self.pods.available(pod, min_ready, now, settle=settle)

        nodes = {node: _on_node(pods, node, digest) for node in self.nodes}
        if surge == 0:
            return self._daemon_replace(nodes, unavailable_max, available, now)
        return self._daemon_surge(
            ds, current, nodes=nodes, surge=surge, available=available, now=now
        )

    def _daemon_replace(
        self,
        nodes: dict[str, OnNode],
        budget: int,
        available: Callable[[Obj], bool],
        now: float,
    ) -> bool:
        """rollingUpdate without surge: delete old pods (unavailable ones always, available ones
        while fewer than maxUnavailable are unavailable); the manage loop creates the new."""
        unavailable, replace, candidates = 0, [], []
        for found in nodes.values():
            if found is None:
                unavailable += 1  # excess pods on the node: the manage loop's, counted unavailable
                continue
            new, old = found
            if (new is None) == (old is None):
                unavailable += 1
            elif new is not None:
                unavailable += int(not available(new))
            elif old is not None and not available(old):
                replace.append(old)
                unavailable += 1
            elif unavailable < budget and old is not None:
                candidates.append(old)
        doomed = replace + candidates[: max(0, min(budget - unavailable, len(candidates)))]
        for pod in doomed:
            self.pods.delete_pod(pod, now)
        return bool(doomed)

    def _daemon_surge(
        self,
        ds: Obj,
        current: Obj,
        *,
        nodes: dict[str, OnNode],
        surge: int,
        available: Callable[[Obj], bool],
        now: float,
    ) -> bool:
        """rollingUpdate with surge: a new pod beside each unavailable old one, up to maxSurge
        beside available old ones; an old pod goes once the new one on its node is available.
        (Every node here runs the DaemonSet, so the sunsetting-node rules do not arise.)"""
        surging, doomed, allowed, candidates = 0, [], [], []
        for node, found in nodes.items():
            if found is None:
                surging += 1
                continue
            new, old = found
            if old is None:
                continue
            if new is None:
                if not available(old):
                    allowed.append(node)
                elif surging < surge:
                    candidates.append(node)
            elif not available(new):
                surging += 1
            else:
                doomed.append(old)
        create = allowed + candidates[: max(0, min(surge - surging, len(candidates)))]
        for pod in doomed:
            self.pods.delete_pod(pod, now)
        for node in create:
            self._daemon_pod(ds, current, node, now)
        return bool(doomed or create)

    def _daemon_status(self, ds: Obj, digest: str, *, now: float, settle: bool) -> bool:
        namespace = ds["metadata"]["namespace"]
        pods = [
            p
            for p in self.store.list("pods", namespace)
            if controlled_by(p, ds) and not is_terminating(p)
        ]
        min_ready = int(ds["spec"].get("minReadySeconds", 0))
        # daemon_controller.go updateDaemonSetStatus: per scheduled node, its oldest pod counts.
        oldest = [
            min(on_node, key=lambda p: (p["metadata"]["creationTimestamp"], _is_new(p, digest)))
            for node in self.nodes
            if (on_node := [p for p in pods if p["spec"].get("nodeName") == node])
        ]
        available = sum(self.pods.available(p, min_ready, now, settle=settle) for p in oldest)
        desired = len(self.nodes)
        status: Obj = {
            "currentNumberScheduled": len(oldest),
            "numberMisscheduled": 0,
            "desiredNumberScheduled": desired,
            "numberReady": sum(ready_since(p) is not None for p in oldest),
            "observedGeneration": ds["metadata"]["generation"],
            "updatedNumberScheduled": sum(
                p["metadata"]["labels"].get(POD_REVISION) == digest for p in oldest
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
