"""The stand-in's Argo CD and Flux following a real branch (sandbox/kubernetes/gitsync.py), rule
by rule: a held application compares but does not sync; an automated one syncs a new revision;
a suspended Kustomization leaves a reconcile request unhandled; a refresh is answered once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.fakes.git_deploy import Deploy
from tests.fakes.git_hold import APP, DEPLOYMENT, KUSTOMIZATION_OWNER, kustomization, owned_by
from tests.fakes.gitops import IMAGES, image
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]


def deploy_at(tmp_path: Path, tag: str) -> Deploy:
    files = {
        "apps/api/deployment.yaml": DEPLOYMENT,
        "apps/api/kustomization.yaml": kustomization(tag),
    }
    return Deploy(tmp_path, files)


def annotate(kube: KubeCluster, key: tuple[str, str, str], annotations: dict[str, str]) -> None:
    obj = kube.fake.store.get(*key)
    obj["metadata"].setdefault("annotations", {}).update(annotations)
    kube.fake.store.update(key[0], obj, check_version=False)


def test_an_automated_application_syncs_a_new_revision_and_says_it_is_synced(
    kube: KubeCluster, tmp_path: Path
) -> None:
    deploy = deploy_at(tmp_path, "v3")
    owned_by(kube, deploy, "argocd")
    sha = deploy.commit({"apps/api/kustomization.yaml": kustomization("v1")}, "back to v1")
    wait_for(lambda: image(kube) == IMAGES[0], what="Argo CD to sync the new revision")
    status = kube.fake.store.get(*APP)["status"]
    assert status["sync"] == {"status": "Synced", "revision": sha}
    assert status["operationState"]["syncResult"] == {"revision": sha}


def test_a_held_application_compares_on_a_refresh_but_does_not_sync(
    kube: KubeCluster, tmp_path: Path
) -> None:
    deploy = deploy_at(tmp_path, "v3")
    owned_by(kube, deploy, "argocd")
    app = kube.fake.store.get(*APP)
    del app["spec"]["syncPolicy"]["automated"]
    kube.fake.store.update("applications", app, check_version=False)
    sha = deploy.commit({"apps/api/kustomization.yaml": kustomization("v1")}, "back to v1")
    annotate(kube, APP, {"argocd.argoproj.io/refresh": "hard"})
    wait_for(
        lambda: (
            "argocd.argoproj.io/refresh"
            not in (kube.fake.store.get(*APP)["metadata"].get("annotations") or {})
        ),
        what="the refresh to be handled",
    )
    assert kube.fake.store.get(*APP)["status"]["sync"] == {"status": "OutOfSync", "revision": sha}
    assert image(kube) == IMAGES[2]


def test_a_suspended_kustomization_leaves_a_reconcile_request_unhandled_until_resumed(
    kube: KubeCluster, tmp_path: Path
) -> None:
    deploy = deploy_at(tmp_path, "v3")
    owned_by(kube, deploy, "flux-kustomization")
    flux = kube.fake.store.get(*KUSTOMIZATION_OWNER)
    flux["spec"]["suspend"] = True
    kube.fake.store.update("kustomizations", flux, check_version=False)
    sha = deploy.commit({"apps/api/kustomization.yaml": kustomization("v1")}, "back to v1")
    annotate(kube, KUSTOMIZATION_OWNER, {"reconcile.fluxcd.io/requestedAt": "now-1"})
    assert image(kube) == IMAGES[2]
    status = kube.fake.store.get(*KUSTOMIZATION_OWNER).get("status") or {}
    assert status.get("lastHandledReconcileAt") != "now-1"
    flux = kube.fake.store.get(*KUSTOMIZATION_OWNER)
    del flux["spec"]["suspend"]
    kube.fake.store.update("kustomizations", flux, check_version=False)
    wait_for(
        lambda: (
            (kube.fake.store.get(*KUSTOMIZATION_OWNER).get("status") or {}).get(
                "lastHandledReconcileAt"
            )
            == "now-1"
        ),
        what="Flux to handle the request once resumed",
    )
    status = kube.fake.store.get(*KUSTOMIZATION_OWNER)["status"]
    followed = next(iter(kube.fake.gitops.branches.followed.values()))
    assert status["lastAppliedRevision"] == f"main@sha1:{sha}", (
        followed.revision,
        deploy.head("main"),
        followed.error,
    )
    assert image(kube) == IMAGES[0]
