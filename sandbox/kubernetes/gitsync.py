"""Argo CD and Flux reading a real Git repository: refresh, sync, and the status they write.

`GitOps.track` keeps a snapshot of "Git" per owner; an owner given a real repository
(`GitOps.follow`) reads it instead, so a test can merge a pull request with real git and
watch the reconciler apply what the branch then says. Only the workload's container
images are compared and applied (what a rollback changes); the rest of the sync is not
modelled. The branch is rendered as the controllers render it: the real `kubectl
kustomize` for a kustomization folder (Argo CD's repo-server runs `kustomize build`,
Flux's kustomize-controller the kustomize API), the manifests as written otherwise.

Argo CD, after argo-cd controller/appcontroller.go:
- processAppRefreshQueueItem / needRefreshAppStatus: an application is refreshed when
  `argocd.argoproj.io/refresh` asks for it (IsRefreshRequested) or its reconciliation
  timeout passed (`POLL` here, timeout.reconciliation there), whether or not it syncs
  automatically; the refresh compares Git's revision with live and writes status.sync
  (`revision`, `status` Synced or OutOfSync) and status.reconciledAt, and the
  annotation is removed once refreshed (pkg/apis/application/v1alpha1/
  application_annotations.go AnnotationKeyRefresh). Manifests are cached by revision
  (reposerver), so a normal refresh at an unchanged revision renders nothing again
  (`refresh: hard` does);
- autoSync: only with spec.syncPolicy.automated (not `enabled: false`); an OutOfSync
  application is synced to the new revision, and synced again at the same revision only
  with selfHeal (the "already attempted" check); the sync writes status.operationState
  (phase Succeeded, syncResult.revision) and leaves the application Synced.

Flux, after fluxcd/kustomize-controller internal/controller/kustomization_controller.go
Reconcile: a suspended object (spec.suspend) is skipped, its reconcile request left
unhandled; otherwise every interval (`POLL` here) and at once when
`reconcile.fluxcd.io/requestedAt` changes, the source revision is applied (drift
corrected), status.lastAppliedRevision is `<branch>@sha1:<commit>` and
status.lastHandledReconcileAt the request's token (fluxcd/pkg runtime/patch and
apis/meta ReconcileRequestAnnotation).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from sandbox.kubernetes.objects import Obj, timestamp
from sandbox.kubernetes.store import Store

POLL = 0.25
"""Seconds between two reads of a followed branch (Argo CD: 180 s; Flux: the interval)."""
REFRESH = "argocd.argoproj.io/refresh"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}

Key = tuple[str, str, str]


@dataclass
class Followed:
    """A branch of a bare repository an owner deploys one workload from."""

    workload: Key
    repository: Path
    branch: str
    path: str
    read_at: float = 0.0
    revision: str | None = None
    images: dict[str, str] = field(default_factory=dict)
    """Container name → image, as the branch renders at `revision`."""
    error: str | None = None
    """Why the last read failed, if it did."""


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "--git-dir", str(repository), *args],
        env=GIT_ENV,
        capture_output=True,
        check=False,
    )


def render(repository: Path, revision: str, path: str) -> dict[str, dict[str, str]]:
    """`kind/name` → container name → image, for every workload the path renders to."""
    archive = _git(repository, "archive", "--format=tar", revision)
    work = Path(tempfile.mkdtemp(prefix="gitops-render-"))
    try:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(work, filter="data")
        start = work / path
        folder = start if start.is_dir() else start.parent
        if any((folder / name).is_file() for name in KUSTOMIZATIONS):
            done = subprocess.run(
                ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True
            )
            texts = [done.stdout]
        else:
            files = [start] if start.is_file() else sorted(start.rglob("*.y*ml"))
            texts = [f.read_text() for f in files]
        rendered: dict[str, dict[str, str]] = {}
        for text in texts:
            for doc in yaml.safe_load_all(text):
                template = ((doc or {}).get("spec") or {}).get("template") or {}
                containers = (template.get("spec") or {}).get("containers") or []
                if containers:
                    key = f"{str(doc.get('kind', '')).lower()}/{doc['metadata']['name']}"
                    rendered[key] = {c["name"]: c["image"] for c in containers}
        return rendered
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _argocd_automated(owner: Obj) -> dict[str, Any] | None:
    automated = ((owner.get("spec") or {}).get("syncPolicy") or {}).get("automated")
    if not isinstance(automated, dict) or automated.get("enabled") is False:
        return None
    return automated


class GitSync:
    """The owners that follow a real branch, refreshed and synced on the controller's passes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.followed: dict[Key, Followed] = {}

    def follow(self, owner: Key, followed: Followed) -> None:
        """Let `owner` deploy `followed.workload` from the branch (read at the next pass)."""
        self.followed[owner] = followed

    def sync_all(self) -> None:
        """Read each due branch (outside the store's lock), then refresh and sync its owner."""
        for owner_key, followed in list(self.followed.items()):
            owner = self.store.find(*owner_key)
            if owner is None:
                continue
            annotations = owner["metadata"].get("annotations") or {}
            handled = (owner.get("status") or {}).get("lastHandledReconcileAt")
            asked = REFRESH in annotations or annotations.get(REQUESTED_AT, handled) != handled
            if not asked and time.monotonic() - followed.read_at < POLL:
                continue
            if not self._read(followed, hard=annotations.get(REFRESH) == "hard"):
                continue
            with self.store.cond:
                now = self.store.find(*owner_key)
                if (
                    now is None
                    or now["metadata"] != owner["metadata"]
                    or now["spec"] != owner["spec"]
                ):
                    continue  # changed while the branch was read (resumed, asked): next pass
                if owner_key[0] == "applications":
                    self._argocd(owner_key, followed)
                else:
                    self._flux(owner_key, followed)

    def _read(self, followed: Followed, *, hard: bool = False) -> bool:
        """Read the branch's head and render it (cached by revision); False if it failed."""
        followed.read_at = time.monotonic()
        head = _git(followed.repository, "rev-parse", f"refs/heads/{followed.branch}")
        revision = head.stdout.decode().strip()
        if head.returncode:
            followed.error = head.stderr.decode().strip()
            return False
        if revision == followed.revision and not hard:
            return True  # the manifests are cached by revision; a hard refresh drops the cache
        resource, _, name = followed.workload
        try:
            rendered = render(followed.repository, revision, followed.path)
        except (subprocess.CalledProcessError, OSError, yaml.YAMLError, tarfile.TarError) as exc:
            # Argo CD: a ComparisonError condition; Flux: not Ready. Tried again next pass.
            followed.error = f"{exc}: {getattr(exc, 'stderr', '')}"
            return False
        followed.revision, followed.error = revision, None
        followed.images = rendered.get(f"{resource.removesuffix('s')}/{name}", {})
        return True

    def _drifted(self, followed: Followed) -> Obj | None:
        """The live workload with Git's images, or None when it already runs them."""
        live = self.store.find(*followed.workload)
        if live is None or not followed.images:
            return None
        wanted = copy.deepcopy(live)
        for container in wanted["spec"]["template"]["spec"]["containers"]:
            container["image"] = followed.images.get(container["name"], container["image"])
        return wanted if wanted != live else None

    def _argocd(self, key: Key, followed: Followed) -> None:
        app = self.store.find(*key)
        if app is None or followed.revision is None:
            return
        status = app.setdefault("status", {})
        drifted = self._drifted(followed)
        automated = _argocd_automated(app)
        synced_at = ((status.get("operationState") or {}).get("syncResult") or {}).get("revision")
        # autoSync: a new revision is synced once; the same one again only with selfHeal.
        if (
            drifted is not None
            and automated is not None
            and (synced_at != followed.revision or automated.get("selfHeal"))
        ):
            self.store.update(followed.workload[0], drifted, check_version=False)
            status["operationState"] = {
                "phase": "Succeeded",
                "finishedAt": timestamp(self.store.clock()),
                "syncResult": {"revision": followed.revision},
            }
            drifted = None
        status["sync"] = {
            "status": "OutOfSync" if drifted is not None else "Synced",
            "revision": followed.revision,
        }
        annotations = app["metadata"].get("annotations") or {}
        if REFRESH in annotations or "reconciledAt" not in status:
            status["reconciledAt"] = timestamp(self.store.clock())
            annotations.pop(REFRESH, None)
        self.store.update("applications", app, check_version=False)

    def _flux(self, key: Key, followed: Followed) -> None:
        owner = self.store.find(*key)
        if owner is None or followed.revision is None or (owner.get("spec") or {}).get("suspend"):
            return
        drifted = self._drifted(followed)
        if drifted is not None:
            self.store.update(followed.workload[0], drifted, check_version=False)
        status = owner.setdefault("status", {})
        revision = f"{followed.branch}@sha1:{followed.revision}"
        status |= {
            "lastAppliedRevision": revision,
            "lastAttemptedRevision": revision,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}
            ],
        }
        requested = (owner["metadata"].get("annotations") or {}).get(REQUESTED_AT)
        if requested:
            status["lastHandledReconcileAt"] = requested
        self.store.update(key[0], owner, check_version=False)
