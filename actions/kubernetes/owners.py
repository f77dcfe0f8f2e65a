"""Who deploys a workload from outside the cluster, in words: no Kubernetes client here.

The GitOps guard (`actions.kubernetes.gitops`) detects and suspends owners through the
API; what the bot says about them, and whether this rollback suspended one, is read
from the run's memory alone, so `bot.application.resync` and the RCA need no client to say it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Tool = Literal["argocd", "argocd-applicationset", "flux-kustomization", "flux-helmrelease", "helm"]


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
            "argocd-applicationset": "Argo CD ApplicationSet",
            "flux-kustomization": "Flux kustomization",
            "flux-helmrelease": "Flux helmrelease",
            "helm": "Helm release",
        }[self.tool]
        return f"{kind} {self.name} in {self.namespace}"

    @property
    def suspendable(self) -> bool:
        """Argo CD and Flux sync by themselves; Helm does not."""
        return self.tool != "helm"


def is_parent(owner: Owner) -> bool:
    """An owner of Argo CD Applications (an ApplicationSet, an app-of-apps parent), not of
    the workloads themselves."""
    kinds = {w.split("/", 1)[0] for w in owner.workloads}
    return bool(kinds) and kinds <= {"application", "applicationset"}


def parent_note(owner: Owner) -> str:
    """Say how a parent would undo the child's suspension, and how the bot holds it."""
    children = ", ".join(owner.workloads)
    if not owner.automatic:
        return (
            f"{owner.label} manages {children} but does not put it back (no automated sync, "
            "or an ApplicationSet policy or rule that leaves it alone): not held"
        )
    if owner.tool == "argocd-applicationset":
        hold = (
            f"an ignoreApplicationDifferences rule for the automated sync of {children} is added "
            "to it before the undo"
        )
    else:
        hold = "its own automatic sync is suspended before the undo"
    return (
        f"{owner.label} manages {children} and would switch its automated sync back on within "
        f"seconds (and with it the bad version): {hold}, and taken back on Resume sync"
    )


def owner_note(owner: Owner, *, revert: str) -> str:
    """Say what the owner does to the rollback and what a person must do."""
    if is_parent(owner):
        return parent_note(owner)
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


GITOPS_MEMORY = "kubernetes/gitops/"
"""The prefix of the memory keys a suspension records what it replaced under."""


def _memory_key(tool: str, namespace: str, name: str) -> str:
    return f"{GITOPS_MEMORY}{tool}/{namespace}/{name}/before"


def suspended_here(memory: Mapping[str, Any], tool: str, *, namespace: str, name: str) -> bool:
    """Tell whether this rollback suspended the owner (its step recorded what it replaced)."""
    return _memory_key(tool, namespace, name) in memory
