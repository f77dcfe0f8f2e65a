"""Argo CD and Flux as far as a rollback meets them: they put Git's version back.

Argo CD (argoproj.io/v1alpha1 Application): with spec.syncPolicy.automated
and selfHeal, the application controller syncs live objects back to Git as
soon as they drift (argo-cd controller/appcontroller.go autoSync: self-heal
on OutOfSync); without `automated` it does nothing by itself. Flux
(kustomize.toolkit.fluxcd.io/v1 Kustomization, helm.toolkit.fluxcd.io/v2
HelmRelease): every interval the controller applies what Git says unless
spec.suspend is true.

The stand-in keeps "Git" per owner: the pod templates of the workloads
`track`ed for it, as they were when tracked (or as set with `commit`), and
on every pass puts a drifted template back while the owner syncs
automatically. That is the behaviour a rollback has to survive; the rest of
Argo CD and Flux is not modelled.
"""

from __future__ import annotations

import copy

from sandbox.kubernetes.objects import Obj
from sandbox.kubernetes.store import Store

WorkloadKey = tuple[str, str, str]
OwnerKey = tuple[str, str, str]


def syncs_automatically(owner_resource: str, owner: Obj) -> bool:
    """Argo CD: automated with selfHeal; Flux: not suspended."""
    spec = owner.get("spec") or {}
    if owner_resource == "applications":
        automated = (spec.get("syncPolicy") or {}).get("automated")
        return isinstance(automated, dict) and bool(automated.get("selfHeal"))
    return not spec.get("suspend")


class GitOps:
    """The sync loops of Argo CD and Flux over tracked workloads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.git: dict[OwnerKey, dict[WorkloadKey, Obj]] = {}

    def track(self, owner: OwnerKey, workload: WorkloadKey) -> None:
        """Record the workload's current template as what Git says for `owner`."""
        with self.store.cond:
            live = self.store.get(*workload)
            self.git.setdefault(owner, {})[workload] = copy.deepcopy(live["spec"]["template"])

    def sync_all(self) -> None:
        """Put drifted templates back for every owner that syncs automatically."""
        with self.store.cond:
            for owner_key, workloads in self.git.items():
                owner = self.store.find(*owner_key)
                if owner is None or not syncs_automatically(owner_key[0], owner):
                    continue
                for key, template in workloads.items():
                    live = self.store.find(*key)
                    if live is not None and live["spec"]["template"] != template:
                        live["spec"]["template"] = copy.deepcopy(template)
                        self.store.update(key[0], live, check_version=False)
