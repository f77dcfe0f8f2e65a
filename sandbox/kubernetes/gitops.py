"""Argo CD and Flux as far as a rollback meets them: they put Git's version back.

Argo CD (argoproj.io/v1alpha1 Application): with spec.syncPolicy.automated
and selfHeal, the application controller syncs live objects back to Git as
soon as they drift (argo-cd controller/appcontroller.go autoSync: self-heal
on OutOfSync); without `automated` it does nothing by itself. Flux
(kustomize.toolkit.fluxcd.io/v1 Kustomization, helm.toolkit.fluxcd.io/v2
HelmRelease): every interval the controller applies what Git says unless
spec.suspend is true.

The stand-in keeps "Git" per owner: what it says of each object `track`ed for
it, as the object was when tracked: a workload's pod template, or, for an
app-of-apps parent, a child Application's whole spec (the parent's Git holds
the child's manifest, so the parent's sync re-applies it, automated sync and
all). On every pass it puts a drifted object back while the owner syncs
automatically. That is the behaviour a rollback has to survive; the rest of
Argo CD and Flux is not modelled.

ApplicationSets (argoproj.io/v1alpha1), after argo-cd
applicationset/controllers/applicationset_controller.go Reconcile and
createOrUpdateInCluster, and applicationset/utils/createOrUpdate.go
CreateOrUpdate / applyIgnoreDifferences:

- the Applications are generated from spec.template, one per element of each
  `list` generator, `{{key}}` in strings replaced by the element's value (the
  other generators are not modelled); each is owned by the ApplicationSet
  (SetControllerReference);
- a missing Application is created; an existing one is overwritten with the
  generated spec, labels and annotations (the annotations
  notified.notifications.argoproj.io and argocd.argoproj.io/refresh kept:
  defaultPreservedAnnotations, plus spec.preservedFields) unless the policy
  forbids updates: spec.syncPolicy.applicationsSync `create-only` or
  `create-delete` (utils.DefaultPolicy ... AllowUpdate; the controller's own
  --policy is taken as `sync` with overrides allowed, its default);
- spec.ignoreApplicationDifferences rules (name: one Application or, empty,
  all; jsonPointers) remove those paths from both the live and the generated
  Application before they are compared and patched, so an ignored field keeps
  its live value. jqPathExpressions are not modelled.

That is what re-enables a child's automated sync in half a second after a
rollback switched it off, unless the ApplicationSet is told to ignore it.

An owner may instead `follow` a real branch of a bare repository: then its refresh,
sync and status are gitsync.py's, read from what the branch renders to.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from sandbox.kubernetes.gitsync import Followed, GitSync
from sandbox.kubernetes.objects import Obj
from sandbox.kubernetes.store import Store

WorkloadKey = tuple[str, str, str]
OwnerKey = tuple[str, str, str]
PRESERVED = ("notified.notifications.argoproj.io", "argocd.argoproj.io/refresh")
NO_UPDATE = ("create-only", "create-delete")
ARGO = ("applications", "applicationsets")
_PARAMETER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def syncs_automatically(owner_resource: str, owner: Obj) -> bool:
    """Argo CD: automated, not `enabled: false` (pkg/apis/application/v1alpha1/types.go
    SyncPolicy.IsAutomatedSyncEnabled), with selfHeal; Flux: not suspended."""
    spec = owner.get("spec") or {}
    if owner_resource == "applications":
        automated = (spec.get("syncPolicy") or {}).get("automated")
        if not isinstance(automated, dict) or automated.get("enabled") is False:
            return False
        return bool(automated.get("selfHeal"))
    return not spec.get("suspend")


def _tracked(key: WorkloadKey, obj: Obj) -> Any:
    """What Git says of an object: an Application's or ApplicationSet's spec (an app-of-apps
    parent deploys those), a workload's pod template."""
    return obj["spec"] if key[0] in ARGO else obj["spec"]["template"]


class GitOps:
    """The sync loops of Argo CD and Flux over tracked workloads, and the ApplicationSets."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.git: dict[OwnerKey, dict[WorkloadKey, Obj]] = {}
        self.branches = GitSync(store)

    def track(self, owner: OwnerKey, workload: WorkloadKey) -> None:
        """Record the object's current template (or Application spec) as Git says for `owner`."""
        with self.store.cond:
            live = self.store.get(*workload)
            self.git.setdefault(owner, {})[workload] = copy.deepcopy(_tracked(workload, live))

    def follow(
        self, owner: OwnerKey, workload: WorkloadKey, *, repository: Path, path: str, branch: str
    ) -> None:
        """Let `owner` deploy the workload from a real branch (`repository`: a bare one)."""
        self.branches.follow(owner, Followed(workload, repository, branch, path))

    def sync_all(self) -> None:
        """Regenerate ApplicationSets' Applications; put drifted objects back for every owner
        that syncs automatically; refresh and sync the owners that follow a branch."""
        self.branches.sync_all()
        with self.store.cond:
            for appset in self.store.list("applicationsets"):
                self._application_set(appset)
            for owner_key, workloads in self.git.items():
                owner = self.store.find(*owner_key)
                if owner is None or not syncs_automatically(owner_key[0], owner):
                    continue
                for key, wanted in workloads.items():
                    live = self.store.find(*key)
                    if live is None or _tracked(key, live) == wanted:
                        continue
                    if key[0] in ARGO:
                        live["spec"] = copy.deepcopy(wanted)
                    else:
                        live["spec"]["template"] = copy.deepcopy(wanted)
                    self.store.update(key[0], live, check_version=False)

    # --- ApplicationSet ------------------------------------------------------------------------

    def _application_set(self, appset: Obj) -> None:
        spec = appset.get("spec") or {}
        policy = (spec.get("syncPolicy") or {}).get("applicationsSync", "sync")
        for generated in _generate(appset):
            name = generated["metadata"]["name"]
            live = self.store.find("applications", appset["metadata"]["namespace"], name)
            if live is None:
                self.store.create("applications", generated)
            elif policy not in NO_UPDATE:
                self._update(appset, live, generated)

    def _update(self, appset: Obj, live: Obj, generated: Obj) -> None:
        """CreateOrUpdate: the generated spec, labels and annotations, ignored paths kept live."""
        meta = live["metadata"]
        annotations = dict(generated["metadata"].get("annotations") or {})
        preserved = [
            *PRESERVED,
            *(appset["spec"].get("preservedFields") or {}).get("annotations", []),
        ]
        for key in preserved:
            if key in (meta.get("annotations") or {}):
                annotations[key] = meta["annotations"][key]
        wanted = copy.deepcopy(live)
        wanted["spec"] = copy.deepcopy(generated["spec"])
        wanted["metadata"]["labels"] = dict(generated["metadata"].get("labels") or {})
        wanted["metadata"]["annotations"] = annotations
        wanted["metadata"]["ownerReferences"] = generated["metadata"]["ownerReferences"]
        for pointer in _ignored(appset, meta["name"]):
            found, value = _pointer_get(live, pointer)
            if found:
                _pointer_set(wanted, pointer, copy.deepcopy(value))
            else:
                _pointer_delete(wanted, pointer)
        if wanted != live:
            self.store.update("applications", wanted, check_version=False)


def _render(value: Any, params: dict[str, Any]) -> Any:
    """fasttemplate-style substitution of `{{key}}` in every string of the template."""
    if isinstance(value, dict):
        return {k: _render(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, params) for v in value]
    if isinstance(value, str):
        return _PARAMETER.sub(lambda m: str(params.get(m[1], m[0])), value)
    return value


def _generate(appset: Obj) -> list[Obj]:
    """template.GenerateApplications for `list` generators: one Application per element."""
    spec = appset.get("spec") or {}
    meta = appset["metadata"]
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    generated = []
    for generator in spec.get("generators") or []:
        for element in (generator.get("list") or {}).get("elements") or []:
            app = _render(copy.deepcopy(spec.get("template") or {}), element)
            app_meta = app.setdefault("metadata", {})
            app_meta["namespace"] = meta["namespace"]
            app_meta["ownerReferences"] = [owner]
            generated.append(app)
    return generated


def _ignored(appset: Obj, name: str) -> list[str]:
    rules = (appset.get("spec") or {}).get("ignoreApplicationDifferences") or []
    return [
        pointer
        for rule in rules
        if not rule.get("name") or rule.get("name") == name
        for pointer in rule.get("jsonPointers") or []
    ]


def _tokens(pointer: str) -> list[str]:
    """RFC 6901: `/a/b~1c` is ["a", "b/c"]."""
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _pointer_get(doc: Any, pointer: str) -> tuple[bool, Any]:
    for token in _tokens(pointer):
        if not isinstance(doc, dict) or token not in doc:
            return False, None
        doc = doc[token]
    return True, doc


def _pointer_set(doc: Any, pointer: str, value: Any) -> None:
    *path, last = _tokens(pointer)
    for token in path:
        doc = doc.setdefault(token, {})
    doc[last] = value


def _pointer_delete(doc: Any, pointer: str) -> None:
    *path, last = _tokens(pointer)
    for token in path:
        if not isinstance(doc, dict) or token not in doc:
            return
        doc = doc[token]
    if isinstance(doc, dict):
        doc.pop(last, None)
