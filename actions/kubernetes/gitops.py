"""GitOps guard: who else deploys the workload, and keeping them from undoing the rollback.

A rolled-back workload whose owner syncs from Git is put back to Git's (bad)
version within seconds: Argo CD self-heal, Flux's reconcile interval. So the
owner is found before approval and shown in the plan, and its automatic sync
is suspended before the undo:

- Argo CD: the tracking annotation `argocd.argoproj.io/tracking-id`
  (`<app>:<group>/<kind>:<namespace>/<name>`, `<app>` being `<ns>_<name>` for
  applications outside Argo CD's namespace) or the default tracking label
  `app.kubernetes.io/instance` naming an Application that exists. Suspending
  removes spec.syncPolicy.automated (Argo CD then only syncs when asked).
- Flux: the labels `kustomize.toolkit.fluxcd.io/name|namespace` (a
  Kustomization) or `helm.toolkit.fluxcd.io/name|namespace` (a HelmRelease).
  Suspending sets spec.suspend: true, as `flux suspend` does.
- Helm alone: `app.kubernetes.io/managed-by: Helm` with the
  `meta.helm.sh/release-name|namespace` annotations and the release's
  secret (`owner=helm,name=<release>`). Nothing syncs, but the next
  `helm upgrade` overwrites the rollback: the plan says so.

What a suspension replaced is recorded twice before the change, in memory
and as an annotation written in the same patch, so a crash anywhere leaves a
record and a repeated suspension never records its own state. After a
successful rollback the owner stays suspended: Git still describes the bad
version, and resuming sync before Git is reverted redeploys it; the step's
output and the plan's notes say what to revert. `resume_sync` puts the
recorded state back, for whoever resumes it once Git is fixed.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from actions.base import PermanentError, StepContext, StepResult
from actions.kubernetes.client import REQUEST_TIMEOUT, kube_errors, merge_patch_custom
from actions.kubernetes.owners import Owner, Tool, _memory_key

RESOURCES: dict[str, tuple[str, str, str]] = {
    "argocd": ("argoproj.io", "v1alpha1", "applications"),
    "flux-kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "flux-helmrelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
}
LABELS = {
    "flux-kustomization": "kustomize.toolkit.fluxcd.io",
    "flux-helmrelease": "helm.toolkit.fluxcd.io",
}
TRACKING_ID = "argocd.argoproj.io/tracking-id"
INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "app.kubernetes.io/managed-by"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
RECORD = "rollback-bot/sync-before"


def _get(api: ApiClient, tool: Tool, namespace: str, name: str) -> dict[str, Any] | None:
    group, version, plural = RESOURCES[tool]
    try:
        with kube_errors(f"reading {plural}.{group} {name} in {namespace}"):
            found = CustomObjectsApi(api).get_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT
            )
    except PermanentError as exc:
        if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
            return None
        raise
    return found if isinstance(found, dict) else None


def _automatic(tool: Tool, obj: dict[str, Any]) -> bool:
    spec = obj.get("spec") or {}
    if tool == "argocd":
        return (spec.get("syncPolicy") or {}).get("automated") is not None
    return not spec.get("suspend")


def _argocd_name(meta: V1ObjectMeta, argocd_namespace: str) -> tuple[str, str] | None:
    tracking = (meta.annotations or {}).get(TRACKING_ID)
    if tracking and ":" in tracking:
        app = tracking.split(":", 1)[0]
        namespace, _, name = app.rpartition("_")
        return (namespace or argocd_namespace), name
    instance = (meta.labels or {}).get(INSTANCE)
    return (argocd_namespace, instance) if instance else None


def detect_owner(
    api: ApiClient, meta: V1ObjectMeta, *, argocd_namespace: str = "argocd"
) -> Owner | None:
    """Find the Argo CD Application, Flux object or Helm release that deploys the workload."""
    labels = meta.labels or {}
    argo = _argocd_name(meta, argocd_namespace)
    if argo is not None:
        found = _get(api, "argocd", *argo)
        if found is not None:
            return Owner("argocd", argo[1], argo[0], _automatic("argocd", found))
    for tool in ("flux-kustomization", "flux-helmrelease"):
        prefix = LABELS[tool]
        name, namespace = labels.get(f"{prefix}/name"), labels.get(f"{prefix}/namespace")
        if name and namespace:
            found = _get(api, tool, namespace, name)  # type: ignore[arg-type]
            if found is not None:
                return Owner(tool, name, namespace, _automatic(tool, found))  # type: ignore[arg-type]
    return _helm(api, meta)


def _helm(api: ApiClient, meta: V1ObjectMeta) -> Owner | None:
    annotations = meta.annotations or {}
    release = annotations.get(RELEASE_NAME)
    if (meta.labels or {}).get(MANAGED_BY) != "Helm" or not release:
        return None
    namespace = annotations.get(RELEASE_NAMESPACE) or meta.namespace or "default"
    with kube_errors(f"listing the Helm release secrets of {release} in {namespace}"):
        secrets = CoreV1Api(api).list_namespaced_secret(
            namespace, label_selector=f"owner=helm,name={release}", _request_timeout=REQUEST_TIMEOUT
        )
    return Owner("helm", release, namespace, False) if secrets.items else None


# --- suspend and resume -----------------------------------------------------------------


def _state(tool: Tool, obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    if tool == "argocd":
        return {"automated": (spec.get("syncPolicy") or {}).get("automated")}
    return {"suspend": spec.get("suspend")}


def _patch(api: ApiClient, tool: Tool, namespace: str, name: str, body: dict[str, Any]) -> None:
    merge_patch_custom(api, RESOURCES[tool], namespace=namespace, name=name, body=body)


def _read(api: ApiClient, tool: Tool, namespace: str, name: str) -> dict[str, Any]:
    found = _get(api, tool, namespace, name)
    if found is None:
        raise PermanentError(f"{RESOURCES[tool][2]} {name} in {namespace} is gone")
    return found


def _recorded(
    memory: MutableMapping[str, Any], tool: Tool, namespace: str, obj: dict[str, Any]
) -> dict[str, Any] | None:
    name = (obj.get("metadata") or {}).get("name", "")
    recorded = memory.get(_memory_key(tool, namespace, name))
    if isinstance(recorded, dict):
        return recorded
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(RECORD)
    return json.loads(text) if text else None


def suspend_sync(
    api: ApiClient, tool: Tool, *, namespace: str, name: str, memory: MutableMapping[str, Any]
) -> bool:
    """Record and switch off the owner's automatic sync; return False if it was already off."""
    obj = _read(api, tool, namespace, name)
    if not _automatic(tool, obj):
        return False
    recorded = _recorded(memory, tool, namespace, obj) or _state(tool, obj)
    memory[_memory_key(tool, namespace, name)] = recorded
    body: dict[str, Any] = {"metadata": {"annotations": {RECORD: json.dumps(recorded)}}}
    if tool == "argocd":
        body["spec"] = {"syncPolicy": {"automated": None}}
    else:
        body["spec"] = {"suspend": True}
    _patch(api, tool, namespace, name, body)
    return True


def resume_sync(
    api: ApiClient, tool: Tool, *, namespace: str, name: str, memory: MutableMapping[str, Any]
) -> str:
    """Put back the automatic sync recorded when the rollback suspended it.

    Call it only once Git no longer describes the version rolled away from.
    """
    obj = _read(api, tool, namespace, name)
    recorded = _recorded(memory, tool, namespace, obj)
    if recorded is None:
        return f"{RESOURCES[tool][2]} {name} in {namespace}: nothing recorded, left as it is"
    body: dict[str, Any] = {"metadata": {"annotations": {RECORD: None}}}
    if tool == "argocd":
        body["spec"] = {"syncPolicy": {"automated": recorded.get("automated")}}
    else:
        body["spec"] = {"suspend": recorded.get("suspend")}
    _patch(api, tool, namespace, name, body)
    memory.pop(_memory_key(tool, namespace, name), None)
    return f"{RESOURCES[tool][2]} {name} in {namespace}: automatic sync resumed"


@dataclass(kw_only=True)
class SuspendSync:
    """Suspend the automatic sync of the Argo CD or Flux object that deploys the workload."""

    api: ApiClient = field(repr=False, compare=False)
    tool: Tool
    namespace: str
    owner: str
    revert: str
    timeout: float = 60.0
    name: str = field(default="kubernetes.suspend_sync", init=False)
    idempotent: bool = field(default=True, init=False)

    def describe(self) -> str:
        """Name the owner and what stays to be done."""
        owner = Owner(self.tool, self.owner, self.namespace, True)
        return (
            f"Suspend the automatic sync of {owner.label} so it cannot put the bad version "
            f"back; it stays suspended after the rollback until {self.revert} in Git"
        )

    def spec(self) -> dict[str, Any]:
        """The owner and the note on Git."""
        return {
            "tool": self.tool,
            "namespace": self.namespace,
            "owner": self.owner,
            "revert": self.revert,
            "timeout": self.timeout,
        }

    def run(self, ctx: StepContext) -> StepResult:
        """Suspend, or report it already suspended (by this rollback or before)."""
        changed = suspend_sync(
            self.api, self.tool, namespace=self.namespace, name=self.owner, memory=ctx.memory
        )
        owner = Owner(self.tool, self.owner, self.namespace, True).label
        after = f"it stays suspended: {self.revert} in Git, then resume its sync"
        if not changed:
            return StepResult(
                summary=f"already suspended: {owner} does not sync automatically",
                output=after,
                skipped=True,
            )
        line = f"{owner}: automatic sync suspended; {after}"
        ctx.emit(line)
        return StepResult(summary=f"suspended the automatic sync of {owner}", output=line)
