"""Argo Rollouts: a Deployment whose pods an Argo Rollouts `Rollout` runs is not rolled back here.

An Argo Rollouts `Rollout` (argoproj.io/v1alpha1, resource `rollouts`,
argo-rollouts manifests/crds/rollout-crd.yaml) replaces a Deployment in one of
two ways, and both leave a Deployment the bot must not patch:

- `spec.workloadRef` (argo-rollouts pkg/apis/rollouts/v1alpha1/types.go,
  ObjectRef: apiVersion, kind, name, scaleDown) names a Deployment whose pod
  template the Rollout runs (rollout/templateref.go, Resolve); the Deployment
  itself is scaled to 0 (scaleDown never|onsuccess|progressively). Its own
  ReplicaSets are not the Rollout's revisions: `kubectl argo rollouts undo`
  (pkg/kubectl-argo-rollouts/cmd/undo/undo.go, RunUndoRollout and
  undoWorkloadRef) takes the revision from the ReplicaSets the Rollout owns and
  patches that template into the Deployment. An undo from the Deployment's own
  history would restore a template the Rollout may never have run, and the
  Rollout would then walk it through its canary or blue-green steps while the
  bot watches a Deployment with 0 replicas.
- A Rollout with its own template whose selector takes over the Deployment's
  pods: the ReplicaSets the Deployment's selector finds are controlled by the
  Rollout (ownerReference kind Rollout, apiVersion argoproj.io/v1alpha1), as
  during a migration from a Deployment to a Rollout.

So before approval the target lists the namespace's Rollouts and the
ReplicaSets its selector finds, and refuses with what to do instead: `kubectl
argo rollouts undo` (or `abort` while an update is in progress). The bot does
not roll Rollouts back itself: their status is their own (paused steps,
analysis runs), not the Deployment's that the bot follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes.client import AppsV1Api, CustomObjectsApi, V1Deployment
from kubernetes.client.exceptions import ApiException

from actions.base import ActionError, PermanentError
from actions.kubernetes.client import REQUEST_TIMEOUT, api_for, kube_errors, object_meta
from actions.kubernetes.rollout import selected

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"


@dataclass(frozen=True)
class ManagedBy:
    """The Rollout that runs a Deployment's pods, and how it was found."""

    rollout: str
    namespace: str
    how: str

    def refusal(self, deployment: str) -> str:
        """What a person reads in the checks and the refused plan."""
        return (
            f"deployment/{deployment} is managed by Argo Rollouts Rollout {self.rollout} "
            f"({self.how}): the bot does not patch the Deployment behind the Rollout's back; "
            f"use `kubectl argo rollouts undo {self.rollout} -n {self.namespace}` "
            f"(or `kubectl argo rollouts abort {self.rollout} -n {self.namespace}` while an "
            "update is in progress)"
        )


def _rollouts(apps: AppsV1Api, namespace: str) -> list[dict[str, Any]]:
    """The namespace's Rollouts; none when the CRD is not installed (404)."""
    api = api_for(CustomObjectsApi, apps.api_client)
    try:
        with kube_errors(f"listing rollouts.{GROUP} in {namespace}"):
            listing = api.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
    except PermanentError as exc:
        if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
            return []
        raise
    items = listing.get("items") if isinstance(listing, dict) else None
    return [i for i in items or [] if isinstance(i, dict)]


def _by_workload_ref(rollouts: list[dict[str, Any]], name: str) -> str | None:
    for rollout in rollouts:
        ref = (rollout.get("spec") or {}).get("workloadRef") or {}
        group = str(ref.get("apiVersion", "")).split("/")[0]
        if ref.get("kind") == "Deployment" and ref.get("name") == name and group == "apps":
            return str((rollout.get("metadata") or {}).get("name", ""))
    return None


def _by_replica_sets(apps: AppsV1Api, deployment: V1Deployment) -> str | None:
    context = f"listing the replica sets of deployment {object_meta(deployment).name}"
    for rs in selected(apps.list_namespaced_replica_set, deployment, context=context):
        for ref in object_meta(rs).owner_references or []:
            if ref.controller and ref.kind == "Rollout" and ref.api_version.startswith(GROUP):
                return str(ref.name)
    return None


def managed_by(apps: AppsV1Api, deployment: V1Deployment) -> ManagedBy | None:
    """The Argo Rollouts Rollout that runs this Deployment's pods, or None."""
    meta = object_meta(deployment)
    namespace, name = meta.namespace or "default", meta.name or ""
    found = _by_workload_ref(_rollouts(apps, namespace), name)
    if found is not None:
        return ManagedBy(found, namespace, "its spec.workloadRef names this Deployment")
    owner = _by_replica_sets(apps, deployment)
    if owner is not None:
        return ManagedBy(owner, namespace, "it controls the ReplicaSets this Deployment selects")
    return None


def rollout_hint(apps: AppsV1Api, *, namespace: str, name: str) -> str:
    """When a Deployment is missing but a Rollout has its name, say what to use instead."""
    try:
        names = {str((r.get("metadata") or {}).get("name")) for r in _rollouts(apps, namespace)}
    except ActionError:
        return ""
    if name not in names:
        return ""
    return (
        f"; {name} in {namespace} is an Argo Rollouts Rollout, not a Deployment: use "
        f"`kubectl argo rollouts undo {name} -n {namespace}`"
    )
