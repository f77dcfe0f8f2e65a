"""GitOps parents: an ApplicationSet or an app-of-apps parent would switch the child's sync
back on; the bot holds the parent first, says so before approval, and releases it on resume.

The stand-in's ApplicationSet controller regenerates its Applications from the template
(argo-cd applicationset_controller.go), and an app-of-apps parent re-applies the child's
spec from its Git, as sandbox/kubernetes/gitops.py describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import CustomObjectsApi

from actions.base import Level, StepContext, spec_of
from actions.kubernetes import KubeConnection, KubernetesParams, KubernetesTarget
from actions.kubernetes.gitops import HELD, suspend_sync
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
API = "voxflow-api"
IMAGES = ["voxflow/api:v1", "voxflow/api:v2", "voxflow/api:v3"]
CHILD = ("applications", "argocd", "voxflow")
APPSET = ("applicationsets", "argocd", "apps")
ROOT = ("applications", "argocd", "root")
AUTOMATED = {"prune": True, "selfHeal": True}
MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


def image(cluster: KubeCluster) -> str:
    containers = cluster.fake.deployment(NS, API)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["image"])


def automated(cluster: KubeCluster, key: tuple[str, str, str]) -> Any:
    return (cluster.fake.store.get(*key)["spec"].get("syncPolicy") or {}).get("automated")


def deployed_by_child(cluster: KubeCluster) -> None:
    cluster.fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    labels = {"app.kubernetes.io/instance": "voxflow"}
    cluster.fake.update_deployment(NS, API, {"metadata": {"labels": labels}})


def application_set(cluster: KubeCluster, *, policy: str | None = None) -> None:
    """ApplicationSet `apps` generates Application `voxflow` (automated, self-heal)."""
    deployed_by_child(cluster)
    spec: dict[str, Any] = {
        "generators": [{"list": {"elements": [{"name": "voxflow"}]}}],
        "template": {
            "metadata": {"name": "{{name}}"},
            "spec": {"project": "default", "syncPolicy": {"automated": AUTOMATED}},
        },
    }
    if policy is not None:
        spec["syncPolicy"] = {"applicationsSync": policy}
    cluster.fake.store.create(
        "applicationsets", {"metadata": {"name": "apps", "namespace": "argocd"}, "spec": spec}
    )
    wait_for(lambda: cluster.fake.store.find(*CHILD), what="the ApplicationSet to generate it")
    cluster.fake.gitops.track(CHILD, ("deployments", NS, API))  # Git says v3, the bad release


def app_of_apps(cluster: KubeCluster) -> None:
    """Application `root` deploys Application `voxflow` from Git (label tracking)."""
    deployed_by_child(cluster)
    store = cluster.fake.store
    root = {"project": "default", "syncPolicy": {"automated": AUTOMATED}}
    store.create(
        "applications", {"metadata": {"name": "root", "namespace": "argocd"}, "spec": root}
    )
    child = {
        "metadata": {
            "name": "voxflow",
            "namespace": "argocd",
            "labels": {"app.kubernetes.io/instance": "root"},
        },
        "spec": {"project": "default", "syncPolicy": {"automated": AUTOMATED}},
    }
    store.create("applications", child)
    cluster.fake.gitops.track(ROOT, CHILD)
    cluster.fake.gitops.track(CHILD, ("deployments", NS, API))


def target(cluster: KubeCluster, connection: KubeConnection | None = None) -> KubernetesTarget:
    params = KubernetesParams(
        kind="kubernetes", namespace=NS, deployment=API, connection=connection or cluster.connection
    )
    return KubernetesTarget(params)


def roll_back(cluster: KubeCluster) -> tuple[Any, dict[str, Any]]:
    plan = target(cluster).plan(None)
    memory: dict[str, Any] = {}
    ctx = StepContext.for_test(timeout=20.0, memory=memory)
    for step in plan.prepare + plan.rollback + plan.verify + plan.resume:
        step.run(ctx)
    return plan, memory


def resume(cluster: KubeCluster, plan: Any, memory: dict[str, Any]) -> list[str]:
    """What Resume sync does (bot/application/resync.py): each suspend step's owner, in plan
    order."""
    chosen = target(cluster)
    held = [s for s in plan.prepare if s.name == "kubernetes.suspend_sync"]
    return [chosen.resume_sync(spec_of(s), memory) for s in held]


def settled(cluster: KubeCluster) -> None:
    """The barrier: two full passes of the GitOps controllers."""
    cluster.fake.gitops.sync_all()
    cluster.fake.gitops.sync_all()


def test_stand_in_application_set_switches_a_suspended_childs_sync_back_on(
    kube: KubeCluster,
) -> None:
    application_set(kube)
    suspend_sync(kube.api, "argocd", namespace="argocd", name="voxflow", memory={})
    wait_for(lambda: automated(kube, CHILD) == AUTOMATED, what="the ApplicationSet to regenerate")


def test_stand_in_app_of_apps_parent_switches_a_suspended_childs_sync_back_on(
    kube: KubeCluster,
) -> None:
    app_of_apps(kube)
    suspend_sync(kube.api, "argocd", namespace="argocd", name="voxflow", memory={})
    wait_for(lambda: automated(kube, CHILD) == AUTOMATED, what="the parent to re-apply the child")


def test_application_set_is_held_before_the_child_and_released_on_resume(
    kube: KubeCluster,
) -> None:
    application_set(kube)
    plan = target(kube).plan(None)
    assert [(s.name, s.spec()["tool"], s.spec()["owner"]) for s in plan.prepare] == [
        ("kubernetes.suspend_sync", "argocd-applicationset", "apps"),
        ("kubernetes.suspend_sync", "argocd", "voxflow"),
    ]
    assert plan.prepare[0].describe().startswith("Hold Argo CD ApplicationSet apps in argocd")
    assert any("ApplicationSet apps in argocd manages application/voxflow" in n for n in plan.notes)
    plan, memory = roll_back(kube)
    settled(kube)
    assert image(kube) == IMAGES[1] and automated(kube, CHILD) is None
    rules = kube.fake.store.get(*APPSET)["spec"]["ignoreApplicationDifferences"]
    assert rules == [{"name": "voxflow", "jsonPointers": list(HELD)}]

    lines = resume(kube, plan, memory)
    assert "no longer ignores the automated sync of voxflow" in lines[0]
    assert "ignoreApplicationDifferences" not in kube.fake.store.get(*APPSET)["spec"]
    wait_for(lambda: automated(kube, CHILD) == AUTOMATED, what="the child's sync to be back")


def test_app_of_apps_parent_is_suspended_before_the_child_and_resumed(kube: KubeCluster) -> None:
    app_of_apps(kube)
    plan, memory = roll_back(kube)
    assert [s.spec()["owner"] for s in plan.prepare] == ["root", "voxflow"]
    settled(kube)
    assert image(kube) == IMAGES[1]
    assert automated(kube, ROOT) is None and automated(kube, CHILD) is None
    resume(kube, plan, memory)
    assert automated(kube, ROOT) == AUTOMATED
    wait_for(lambda: automated(kube, CHILD) == AUTOMATED, what="the child's sync to be back")


def test_application_set_that_only_creates_is_not_held(kube: KubeCluster) -> None:
    application_set(kube, policy="create-only")
    chosen = target(kube)
    plan = chosen.plan(None)
    assert [s.spec()["owner"] for s in plan.prepare] == ["voxflow"]
    findings = [f for f in chosen.evidence(None) if "ApplicationSet apps" in f.text]
    assert [f.level for f in findings] == [Level.OK]


def test_missing_permission_on_the_application_set_blocks_before_approval(
    kube: KubeCluster, tmp_path: Path
) -> None:
    application_set(kube)
    rule = (
        '  - apiGroups: ["argoproj.io"]\n    resources: ["applicationsets"]\n'
        '    verbs: ["get", "patch"]\n'
    )
    manifest = MANIFEST.read_text()
    assert rule in manifest
    user = "system:serviceaccount:rollback-bot:rollback-bot"  # deploy/rbac.yaml's subject
    kube.fake.enforce_rbac(manifest.replace(rule, ""), token="t", user=user)
    kubeconfig = kube.fake.write_kubeconfig(tmp_path / "bot", token="t")
    chosen = target(kube, KubeConnection(kubeconfig=str(kubeconfig), context="sandbox"))
    blocked = [f for f in chosen.evidence(None) if f.level == Level.BLOCKED]
    assert any(
        "get applicationsets.argoproj.io in argocd" in f.text
        and "patch applicationsets.argoproj.io in argocd" in f.text
        for f in blocked
    ), blocked
    assert chosen.plan(None).prepare[0].spec()["tool"] == "argocd-applicationset"


def test_application_set_deployed_by_an_app_of_apps_parent_is_held_under_it(
    kube: KubeCluster,
) -> None:
    application_set(kube)
    root = {"project": "default", "syncPolicy": {"automated": AUTOMATED}}
    kube.fake.store.create(
        "applications", {"metadata": {"name": "root", "namespace": "argocd"}, "spec": root}
    )
    appset = kube.fake.store.get(*APPSET)
    appset["metadata"]["labels"] = {"app.kubernetes.io/instance": "root"}
    kube.fake.store.update("applicationsets", appset, check_version=False)
    kube.fake.gitops.track(ROOT, APPSET)
    plan, _ = roll_back(kube)
    assert [s.spec()["owner"] for s in plan.prepare] == ["root", "apps", "voxflow"]
    settled(kube)  # the root does not put the ApplicationSet's rules back: it is suspended
    assert image(kube) == IMAGES[1] and automated(kube, CHILD) is None
    assert kube.fake.store.get(*APPSET)["spec"]["ignoreApplicationDifferences"]


def test_hold_is_completed_after_a_crash_before_its_patch(
    kube: KubeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    application_set(kube)
    chosen = target(kube)
    hold = chosen.plan(None).prepare[0]

    def crash(self: CustomObjectsApi, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the bot died")

    monkeypatch.setattr(CustomObjectsApi, "patch_namespaced_custom_object", crash)
    memory: dict[str, Any] = {}
    with pytest.raises(RuntimeError):
        hold.run(StepContext.for_test(memory=memory))
    monkeypatch.undo()
    assert memory  # recorded before the patch, which never happened
    result = chosen.restore(hold.name, spec_of(hold)).run(StepContext.for_test(memory=memory))
    assert not result.skipped
    rules = kube.fake.store.get(*APPSET)["spec"]["ignoreApplicationDifferences"]
    assert rules == [{"name": "voxflow", "jsonPointers": list(HELD)}]
