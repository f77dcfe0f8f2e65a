"""Argo Rollouts: a Deployment run by a Rollout is refused before approval, nothing patched.

The stand-in serves `rollouts.argoproj.io/v1alpha1` as the CRD declares it; kubectl finds it
by plural and short name through discovery, as on a cluster with Argo Rollouts installed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PlanningError
from actions.kubernetes import KubernetesParams, KubernetesTarget

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
API = "voxflow-api"
IMAGES = ["voxflow/api:v1", "voxflow/api:v2", "voxflow/api:v3"]
CHECK = "not managed by Argo Rollouts"


def target(cluster: KubeCluster) -> KubernetesTarget:
    params = KubernetesParams(
        kind="kubernetes", namespace=NS, deployment=API, connection=cluster.connection
    )
    return KubernetesTarget(params)


def rollout(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def workload_ref(cluster: KubeCluster, deployment: str = API) -> None:
    """The migration Argo Rollouts documents: the Rollout runs the Deployment's template,
    the Deployment is scaled to 0."""
    cluster.fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    cluster.fake.update_deployment(NS, API, {"spec": {"replicas": 0}})
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    cluster.fake.store.create(
        "rollouts",
        rollout(
            "voxflow-api-ro",
            {
                "replicas": 2,
                "selector": {"matchLabels": {"app": API}},
                "workloadRef": {**ref, "scaleDown": "onsuccess"},
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            },
        ),
    )


def image(cluster: KubeCluster) -> str:
    containers = cluster.fake.deployment(NS, API)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["image"])


def test_a_deployment_named_by_a_rollouts_workload_ref_is_refused_before_approval(
    kube: KubeCluster,
) -> None:
    workload_ref(kube)
    checks = {c.name: c for c in target(kube).checks(None)}
    refused = checks[CHECK]
    assert not refused.ok
    assert "managed by Argo Rollouts Rollout voxflow-api-ro" in refused.detail
    assert "spec.workloadRef" in refused.detail
    assert f"`kubectl argo rollouts undo voxflow-api-ro -n {NS}`" in refused.detail
    with pytest.raises(PlanningError, match="use `kubectl argo rollouts undo voxflow-api-ro"):
        target(kube).plan(None)
    assert image(kube) == IMAGES[-1]  # nothing patched


def test_replica_sets_controlled_by_a_rollout_are_recognised(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=IMAGES, replicas=1)
    created = kube.fake.store.create(
        "rollouts",
        rollout(
            "voxflow-api",
            {
                "replicas": 1,
                "selector": {"matchLabels": {"app": API}},
                "template": kube.fake.deployment(NS, API)["spec"]["template"],
            },
        ),
    )
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "voxflow-api",
        "uid": created["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    template = kube.fake.deployment(NS, API)["spec"]["template"]
    kube.fake.store.create(
        "replicasets",
        {
            "metadata": {
                "name": "voxflow-api-7d9f8",
                "namespace": NS,
                "labels": {"app": API},
                "ownerReferences": [owner],
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": API}},
                "template": template,
            },
        },
    )
    checks = {c.name: c for c in target(kube).checks(None)}
    assert not checks[CHECK].ok
    assert "it controls the ReplicaSets this Deployment selects" in checks[CHECK].detail


def test_a_rollout_of_another_deployment_does_not_block(kube: KubeCluster) -> None:
    workload_ref(kube, deployment="voxflow-web")
    checks = {c.name: c for c in target(kube).checks(None)}
    assert checks[CHECK].ok, checks[CHECK].detail
    assert target(kube).plan(None).rollback[0].name == "kubernetes.rollout_undo"


def test_kubectl_finds_rollouts_through_discovery(kube: KubeCluster) -> None:
    workload_ref(kube)
    for name in ("rollouts.argoproj.io", "rollouts", "ro"):
        done = kube.kubectl("get", name, "-n", NS, "-o", "json")
        assert done.returncode == 0, done.stderr
        (item,) = json.loads(done.stdout)["items"]
        assert item["apiVersion"] == "argoproj.io/v1alpha1"
        assert item["spec"]["workloadRef"]["name"] == API


def test_a_rollout_configured_as_a_deployment_is_named_as_such(kube: KubeCluster) -> None:
    kube.fake.store.create(
        "rollouts",
        rollout(API, {"replicas": 1, "selector": {"matchLabels": {"app": API}}}),
    )
    (found,) = target(kube).checks(None)
    assert not found.ok and f'deployments.apps "{API}" not found' in found.detail
    assert f"{API} in {NS} is an Argo Rollouts Rollout, not a Deployment" in found.detail
    with pytest.raises(PlanningError, match="is an Argo Rollouts Rollout, not a Deployment"):
        target(kube).plan(None)
