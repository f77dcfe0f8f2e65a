"""Who deploys a workload from outside the cluster, in words: no Kubernetes client here.

The GitOps guard (`actions.kubernetes.gitops`) detects and suspends owners through the
API; what the bot says about them, and whether this rollback suspended one, is read
from the run's memory alone, so `bot.resync` and the RCA need no client to say it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Tool = Literal["argocd", "flux-kustomization", "flux-helmrelease", "helm"]


@dataclass(frozen=True)
class Owner:
    """What deploys a workload from outside the cluster."""

    tool: Tool
    name: str
    namespace: str
    automatic: bool
    workloads: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How a person finds it: `argocd application/x in argocd`, ..."""
        kind = {
            "argocd": "Argo CD application",
            "flux-kustomization": "Flux kustomization",
            "flux-helmrelease": "Flux helmrelease",
            "helm": "Helm release",
        }[self.tool]
        return f"{kind} {self.name} in {self.namespace}"

    @property
    def suspendable(self) -> bool:
        """Argo CD and Flux sync by themselves; Helm does not."""
        return self.tool != "helm"


def owner_note(owner: Owner, *, revert: str) -> str:
    """Say what the owner does to the rollback and what a person must do."""
    if owner.tool == "helm":
        return (
            f"{owner.label} manages {', '.join(owner.workloads)}: the next `helm upgrade` "
            f"overwrites the rollback; {revert} in the chart's values first"
        )
    state = "syncs automatically" if owner.automatic else "does not sync automatically"
    return (
        f"{owner.label} deploys {', '.join(owner.workloads)} and {state}; its automatic sync is "
        f"suspended before the undo and stays suspended after it: {revert} in Git, then "
        "resume its sync"
    )


def _memory_key(tool: str, namespace: str, name: str) -> str:
    return f"kubernetes/gitops/{tool}/{namespace}/{name}/before"


def suspended_here(memory: Mapping[str, Any], tool: str, *, namespace: str, name: str) -> bool:
    """Tell whether this rollback suspended the owner (its step recorded what it replaced)."""
    return _memory_key(tool, namespace, name) in memory
