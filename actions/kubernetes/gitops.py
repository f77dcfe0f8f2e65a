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

Parents (issue 27): the Application itself may be put back by whoever made it.
An ApplicationSet (the Application's controller ownerReference) regenerates it
from its template within seconds, automated sync included; an app-of-apps
parent (an Application tracking the child Application, by the same annotation
or label) re-applies the child's manifest from Git when it syncs. Each parent
is found before approval, up the chain, and held before the child is
suspended: an ApplicationSet gets an `ignoreApplicationDifferences` rule for
the child's automated sync and the bot's record annotation (argo-cd
applicationset/utils/createOrUpdate.go: ignored paths keep their live value),
unless its `applicationsSync` policy never updates (create-only,
create-delete) or a rule already covers it; a parent Application's own
automated sync is suspended like any owner's. Resume sync takes the rules out
and the sync back, parents first (plan order). An ApplicationSet the bot may
not read is taken to overwrite, so the plan holds it and the permission check
says what is missing.

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
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given, sparse
from actions.kubernetes.client import REQUEST_TIMEOUT, kube_errors, merge_patch_custom
from actions.kubernetes.owners import Owner, Tool, _memory_key

RESOURCES: dict[str, tuple[str, str, str]] = {
    "argocd": ("argoproj.io", "v1alpha1", "applications"),
    "argocd-applicationset": ("argoproj.io", "v1alpha1", "applicationsets"),
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
HELD = ("/spec/syncPolicy/automated", "/metadata/annotations/rollback-bot~1sync-before")
"""What an ApplicationSet is told to leave alone on a held child (JSON pointers)."""
NO_UPDATE = ("create-only", "create-delete")
PARENT_DEPTH = 5


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
        # argo-cd pkg/apis/application/v1alpha1/types.go SyncPolicy.IsAutomatedSyncEnabled:
        # `automated: {enabled: false}` (Argo CD 3) is off.
        automated = (spec.get("syncPolicy") or {}).get("automated")
        return isinstance(automated, dict) and automated.get("enabled") is not False
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
            found = _get(api, tool, namespace, name)
            if found is not None:
                return Owner(tool, name, namespace, _automatic(tool, found))
    return _helm(api, meta)


def parents(
    api: ApiClient, tool: Tool, namespace: str, name: str, *, argocd_namespace: str = "argocd"
) -> list[Owner]:
    """The ApplicationSets and app-of-apps parents above an Argo CD Application, nearest first,
    each naming the child it would put back (`application/<name>`)."""
    found: list[Owner] = []
    seen = {(tool, namespace, name)}
    for _ in range(PARENT_DEPTH):
        try:
            obj = _get(api, tool, namespace, name)
        except PermanentError:
            break  # unreadable (forbidden): the permission check names what is missing
        parent = (
            _parent_of(
                api, obj, tool=tool, namespace=namespace, name=name, argocd_ns=argocd_namespace
            )
            if obj
            else None
        )
        if parent is None or (parent.tool, parent.namespace, parent.name) in seen:
            break
        seen.add((parent.tool, parent.namespace, parent.name))
        found.append(parent)
        tool, namespace, name = parent.tool, parent.namespace, parent.name
    return found


def _parent_of(
    api: ApiClient, obj: dict[str, Any], *, tool: Tool, namespace: str, name: str, argocd_ns: str
) -> Owner | None:
    meta = obj.get("metadata") or {}
    child = f"application/{name}" if tool == "argocd" else f"applicationset/{name}"
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "ApplicationSet" and tool == "argocd":
            overwrites = _appset_overwrites(api, namespace, ref.get("name", ""), name)
            return Owner(
                "argocd-applicationset", ref.get("name", ""), namespace, overwrites, (child,)
            )
    tracked = _argocd_name(
        V1ObjectMeta(annotations=meta.get("annotations"), labels=meta.get("labels")), argocd_ns
    )
    if tracked is None or tracked == (namespace, name):
        return None
    parent = _get(api, "argocd", *tracked)
    if parent is None:
        return None
    return Owner("argocd", tracked[1], tracked[0], _automatic("argocd", parent), (child,))


def _covered(appset: dict[str, Any], child: str) -> bool:
    """Whether an ignoreApplicationDifferences rule already keeps the child's automated sync."""
    for rule in (appset.get("spec") or {}).get("ignoreApplicationDifferences") or []:
        if rule.get("name") in (None, "", child) and any(
            HELD[0].startswith(p) for p in rule.get("jsonPointers") or []
        ):
            return True
    return False


def _appset_overwrites(api: ApiClient, namespace: str, name: str, child: str) -> bool:
    """Whether the ApplicationSet would put the child's automated sync back (unreadable: yes)."""
    try:
        appset = _get(api, "argocd-applicationset", namespace, name)
    except PermanentError:
        return True  # forbidden: held all the same; the permission check names what is missing
    if appset is None:
        return False
    policy = ((appset.get("spec") or {}).get("syncPolicy") or {}).get("applicationsSync", "sync")
    return policy not in NO_UPDATE and not _covered(appset, child)


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


def _children(recorded: dict[str, Any] | None) -> list[str]:
    return [str(r.get("name")) for r in (recorded or {}).get("added") or []]


def hold_application_set(
    api: ApiClient,
    *,
    namespace: str,
    name: str,
    children: tuple[str, ...],
    memory: MutableMapping[str, Any],
) -> bool:
    """Add an ignoreApplicationDifferences rule per child, recorded; False if none was needed."""
    tool: Tool = "argocd-applicationset"
    obj = _read(api, tool, namespace, name)
    recorded = _recorded(memory, tool, namespace, obj) or {"added": []}
    # What is live decides, not the record: a crash between the two leaves a record only.
    new = [{"name": c, "jsonPointers": list(HELD)} for c in children if not _covered(obj, c)]
    if not new:
        return False
    again = {str(r["name"]) for r in new}
    recorded = {"added": [r for r in recorded["added"] if r.get("name") not in again] + new}
    memory[_memory_key(tool, namespace, name)] = recorded
    current = (obj.get("spec") or {}).get("ignoreApplicationDifferences") or []
    body = {
        "metadata": {"annotations": {RECORD: json.dumps(recorded)}},
        "spec": {"ignoreApplicationDifferences": [*current, *new]},
    }
    _patch(api, tool, namespace, name, body)
    return True


def release_application_set(
    api: ApiClient, *, namespace: str, name: str, memory: MutableMapping[str, Any]
) -> str:
    """Take out exactly the rules the hold added; other rules stay as they are now."""
    tool: Tool = "argocd-applicationset"
    obj = _read(api, tool, namespace, name)
    recorded = _recorded(memory, tool, namespace, obj)
    if recorded is None:
        return f"applicationsets {name} in {namespace}: nothing recorded, left as it is"
    added = recorded.get("added") or []
    current = (obj.get("spec") or {}).get("ignoreApplicationDifferences") or []
    body = {
        "metadata": {"annotations": {RECORD: None}},
        "spec": {"ignoreApplicationDifferences": [r for r in current if r not in added] or None},
    }
    _patch(api, tool, namespace, name, body)
    memory.pop(_memory_key(tool, namespace, name), None)
    return (
        f"applicationsets {name} in {namespace}: no longer ignores the automated sync of "
        f"{', '.join(_children(recorded))}"
    )


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
    """Put back the automatic sync recorded when the rollback suspended it (an ApplicationSet:
    take out the rules its hold added).

    Call it only once Git no longer describes the version rolled away from.
    """
    if tool == "argocd-applicationset":
        return release_application_set(api, namespace=namespace, name=name, memory=memory)
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


def holds(
    api: ApiClient, tool: Tool, *, namespace: str, name: str, children: tuple[str, ...] = ()
) -> bool:
    """Whether the owner is held now: its automatic sync off (an ApplicationSet: a rule
    keeps each child's automated sync as it is)."""
    if tool == "argocd-applicationset":
        obj = _read(api, tool, namespace, name)
        return all(_covered(obj, child) for child in children)
    return not _automatic(tool, _read(api, tool, namespace, name))


# --- one reconcile, watched after the hold is released ---------------------------------------
#
# Argo CD: the annotation `argocd.argoproj.io/refresh` asks the application controller for a
# refresh; it removes the annotation once refreshed (argo-cd
# pkg/apis/application/v1alpha1/application_annotations.go AnnotationKeyRefresh), having set
# status.sync (the revision compared, Synced or OutOfSync) and status.reconciledAt
# (controller/appcontroller.go processAppRefreshQueueItem), and synced if automated (autoSync).
# Flux: `reconcile.fluxcd.io/requestedAt: <token>` asks for a reconcile now; the controller
# records the token it handled in status.lastHandledReconcileAt and the source revision it
# applied in status.lastAppliedRevision, `<branch>@sha1:<commit>` (fluxcd/pkg
# apis/meta/annotations.go ReconcileRequestAnnotation; kustomize-controller
# internal/controller/kustomization_controller.go reconcile).

REFRESH = "argocd.argoproj.io/refresh"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def request_reconcile(api: ApiClient, tool: Tool, *, namespace: str, name: str, token: str) -> bool:
    """Ask the owner to reconcile now; False for an owner that does not reconcile (Helm, a set).

    Argo CD is asked for a hard refresh: its cached manifests and resolved revision are
    dropped, so the comparison is with the branch as it is now, not as it was last read.
    """
    if tool == "argocd":
        annotations = {REFRESH: "hard"}
    elif tool in LABELS:
        annotations = {REQUESTED_AT: token}
    else:
        return False
    _patch(api, tool, namespace, name, {"metadata": {"annotations": annotations}})
    return True


def reconciled(
    api: ApiClient, tool: Tool, *, namespace: str, name: str, token: str, revision: str
) -> str | None:
    """How the owner found live against Git once it has reconciled at commit `revision` since
    `request_reconcile` (`Synced`, `OutOfSync`; Flux: `Ready`); None until then."""
    obj = _read(api, tool, namespace, name)
    status = obj.get("status") or {}
    if tool == "argocd":
        pending = REFRESH in ((obj.get("metadata") or {}).get("annotations") or {})
        sync = status.get("sync") or {}
        return None if pending or sync.get("revision") != revision else str(sync.get("status"))
    if status.get("lastHandledReconcileAt") != token:
        return None
    applied = str(status.get("lastAppliedRevision") or "")
    if tool == "flux-kustomization" and applied.rpartition(":")[2] != revision:
        return None
    return "Ready"


class SuspendSync(Step):
    """Suspend the automatic sync of the Argo CD or Flux object that deploys the workload."""

    name: str = fixed("kubernetes.suspend_sync")
    idempotent: bool = fixed(True)
    timeout: float = 60.0
    api: ApiClient = given()
    tool: Tool
    namespace: str
    owner: str
    revert: str
    children: tuple[str, ...] = sparse(default=())
    """For an ApplicationSet: the generated Applications it must leave suspended."""

    def describe(self) -> str:
        """Name the owner and what stays to be done."""
        owner = Owner(self.tool, self.owner, self.namespace, True)
        if self.tool == "argocd-applicationset":
            return (
                f"Hold {owner.label}: add ignoreApplicationDifferences rules so it no longer "
                f"switches the automated sync of application {', '.join(self.children)} back on; "
                "they stay until the sync is resumed"
            )
        return (
            f"Suspend the automatic sync of {owner.label} so it cannot put the bad version "
            f"back; it stays suspended after the rollback until {self.revert} in Git"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Suspend, or report it already suspended (by this rollback or before)."""
        owner = Owner(self.tool, self.owner, self.namespace, True).label
        if self.tool == "argocd-applicationset":
            return self._hold(ctx, owner)
        changed = suspend_sync(
            self.api, self.tool, namespace=self.namespace, name=self.owner, memory=ctx.memory
        )
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

    def _hold(self, ctx: StepContext, owner: str) -> StepResult:
        changed = hold_application_set(
            self.api,
            namespace=self.namespace,
            name=self.owner,
            children=self.children,
            memory=ctx.memory,
        )
        children = ", ".join(self.children)
        if not changed:
            return StepResult(
                summary=f"already held: {owner} leaves the automated sync of {children} alone",
                skipped=True,
            )
        line = f"{owner}: ignores the automated sync of {children} until the sync is resumed"
        ctx.emit(line)
        return StepResult(summary=f"held {owner}", output=line)
