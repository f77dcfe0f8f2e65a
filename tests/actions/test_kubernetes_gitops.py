"""GitOps guard: Argo CD, Flux and Helm owners found, sync suspended, rollback kept.

The stand-in plays Argo CD self-heal and Flux reconciliation: while the owner
syncs automatically it puts Git's template (the bad version) back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import CustomObjectsApi

from actions.base import StepContext, spec_of
from actions.kubernetes import KubernetesParams, KubernetesTarget, rollout_undo
from actions.kubernetes.gitops import RECORD, resume_sync
from tests.fakes.gitops import API, APP, AUTOMATED, FLUX, IMAGES, NS, argocd, flux, image
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]


def target(cluster: KubeCluster) -> KubernetesTarget:
    params = KubernetesParams(
        kind="kubernetes", namespace=NS, deployment=API, connection=cluster.connection
    )
    return KubernetesTarget(params)


def run_plan(cluster: KubeCluster, memory: dict[str, Any]) -> Any:
    plan = target(cluster).plan(None)
    ctx = StepContext.for_test(timeout=20.0, memory=memory)
    for step in plan.prepare + plan.rollback + plan.verify + plan.resume:
        step.run(ctx)
    return plan


def test_stand_in_argocd_puts_the_bad_version_back_after_a_plain_undo(kube: KubeCluster) -> None:
    argocd(kube)
    rollout_undo(kube.apps, namespace=NS, name=API)
    wait_for(lambda: image(kube) == IMAGES[2], what="Argo CD self-heal to redeploy Git's version")


@pytest.mark.parametrize("tracking_id", [False, True], ids=["instance label", "tracking id"])
def test_argocd_sync_is_suspended_and_the_rollback_stays(
    kube: KubeCluster, tracking_id: bool
) -> None:
    argocd(kube, tracking_id=tracking_id)
    checks = {c.name: c for c in target(kube).checks(None)}
    assert "Argo CD application voxflow in argocd" in checks["GitOps owner known"].detail
    memory: dict[str, Any] = {}
    plan = run_plan(kube, memory)
    assert plan.prepare[0].name == "kubernetes.suspend_sync"
    note = next(n for n in plan.notes if "Argo CD application voxflow" in n)
    assert "stays suspended" in note and "set deployment/voxflow-api back to" in note
    kube.fake.gitops.sync_all()
    assert image(kube) == IMAGES[1]
    application = kube.fake.store.get(*APP)
    assert "automated" not in application["spec"]["syncPolicy"]
    assert json.loads(application["metadata"]["annotations"][RECORD]) == {"automated": AUTOMATED}

    # Resuming before Git is fixed redeploys the bad version: why the plan says to fix Git first.
    line = resume_sync(kube.api, "argocd", namespace="argocd", name="voxflow", memory=memory)
    assert line.endswith("automatic sync resumed")
    assert kube.fake.store.get(*APP)["spec"]["syncPolicy"]["automated"] == AUTOMATED
    wait_for(lambda: image(kube) == IMAGES[2], what="Argo CD to sync Git's version again")


@pytest.mark.parametrize("tool", list(FLUX))
def test_flux_is_suspended_and_resumed(kube: KubeCluster, tool: str) -> None:
    owner = flux(kube, tool)
    memory: dict[str, Any] = {}
    plan = run_plan(kube, memory)
    assert any(n.startswith("Flux") for n in plan.notes)
    kube.fake.gitops.sync_all()
    assert image(kube) == IMAGES[1]
    assert kube.fake.store.get(*owner)["spec"]["suspend"] is True
    resume_sync(kube.api, tool, namespace="flux-system", name="apps", memory={})  # type: ignore[arg-type]
    assert "suspend" not in kube.fake.store.get(*owner)["spec"]
    wait_for(lambda: image(kube) == IMAGES[2], what="Flux to apply Git's version again")


def test_helm_release_gets_a_note_and_no_step(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=IMAGES, replicas=1)
    kube.fake.update_deployment(
        NS,
        API,
        {
            "metadata": {
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {"meta.helm.sh/release-name": "voxflow"},
            }
        },
    )
    kube.fake.store.create(
        "secrets",
        {
            "metadata": {
                "name": "sh.helm.release.v1.voxflow.v3",
                "namespace": NS,
                "labels": {"owner": "helm", "name": "voxflow", "status": "deployed"},
            },
            "type": "helm.sh/release.v1",
        },
    )
    plan = target(kube).plan(None)
    assert [s.name for s in plan.prepare] == []
    assert any("next `helm upgrade` overwrites the rollback" in n for n in plan.notes)


def test_no_owner_found_is_said(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=IMAGES, replicas=1)
    kube.fake.update_deployment(
        NS, API, {"metadata": {"labels": {"app.kubernetes.io/instance": "x"}}}
    )
    checks = {c.name: c for c in target(kube).checks(None)}
    assert checks["GitOps owner known"].detail == "no Argo CD, Flux or Helm owner found"


@pytest.mark.parametrize("after", [False, True], ids=["before patch", "after patch"])
def test_suspend_resumes_after_a_crash_and_keeps_the_original_record(
    kube: KubeCluster, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    argocd(kube)
    chosen = target(kube)
    step = chosen.plan(None).prepare[0]
    real = CustomObjectsApi.patch_namespaced_custom_object

    def crash(self: CustomObjectsApi, *args: Any, **kwargs: Any) -> Any:
        if after:
            real(self, *args, **kwargs)
        raise RuntimeError("the bot died")

    monkeypatch.setattr(CustomObjectsApi, "patch_namespaced_custom_object", crash)
    memory: dict[str, Any] = {}
    with pytest.raises(RuntimeError):
        step.run(StepContext.for_test(memory=memory))
    monkeypatch.undo()
    result = chosen.restore(step.name, spec_of(step)).run(StepContext.for_test(memory=memory))
    assert result.skipped == after
    application = kube.fake.store.get(*APP)
    assert json.loads(application["metadata"]["annotations"][RECORD]) == {"automated": AUTOMATED}
    resume_sync(kube.api, "argocd", namespace="argocd", name="voxflow", memory={})
    assert kube.fake.store.get(*APP)["spec"]["syncPolicy"]["automated"] == AUTOMATED


def test_argocd_automated_sync_switched_off_by_enabled_false_is_not_automatic(
    kube: KubeCluster,
) -> None:
    argocd(kube)
    off = {"automated": dict(AUTOMATED, enabled=False)}
    kube.fake.store.update(
        "applications",
        dict(kube.fake.store.get(*APP), spec={"syncPolicy": off}),
        check_version=False,
    )
    checks = {c.name: c for c in target(kube).checks(None)}
    assert "does not sync automatically" in checks["GitOps owner known"].detail
    rollout_undo(kube.apps, namespace=NS, name=API)
    kube.fake.gitops.sync_all()
    assert image(kube) == IMAGES[1]  # Argo CD leaves it: automated sync is disabled
