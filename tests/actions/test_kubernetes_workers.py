"""Workers really stopped: scale subresource, no pod left (terminating included), KEDA paused."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PlanningError, StepContext
from actions.kubernetes import KubernetesParams, KubernetesTarget, StartWorkers, StopWorkers
from actions.kubernetes.autoscaling import PAUSED, PAUSED_REPLICAS, RECORD
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
WORKER = "voxflow-worker"
FROZEN = 3600.0


def workers(cluster: KubeCluster, replicas: int = 2) -> None:
    cluster.fake.add_deployment(NS, WORKER, images=["voxflow/worker:v1"], replicas=replicas)


def stop(cluster: KubeCluster) -> StopWorkers:
    return StopWorkers(apps=cluster.apps, namespace=NS, workers=(WORKER,))


def start(cluster: KubeCluster) -> StartWorkers:
    return StartWorkers(apps=cluster.apps, namespace=NS, workers=(WORKER,))


def context(memory: dict[str, Any] | None = None, emit: Any = None) -> StepContext:
    return StepContext.for_test(
        timeout=20.0, memory={} if memory is None else memory, emit=emit or (lambda line: None)
    )


def replicas(cluster: KubeCluster) -> int:
    return int(cluster.fake.deployment(NS, WORKER)["spec"]["replicas"])


def scaled_object(cluster: KubeCluster, annotations: dict[str, str] | None = None) -> None:
    cluster.fake.store.create(
        "scaledobjects",
        {
            "metadata": {"name": "worker-queue", "namespace": NS, "annotations": annotations or {}},
            "spec": {"scaleTargetRef": {"name": WORKER}, "minReplicaCount": 0},
        },
    )
    cluster.fake.set_demand(NS, "worker-queue", 2)  # the queue has work: KEDA wants 2 replicas


def hpa(cluster: KubeCluster, min_replicas: int = 1) -> None:
    cluster.fake.store.create(
        "horizontalpodautoscalers",
        {
            "metadata": {"name": "worker-cpu", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER},
                "minReplicas": min_replicas,
                "maxReplicas": 5,
            },
        },
    )


def scale_requests(cluster: KubeCluster) -> list[tuple[str, str, str, Any]]:
    return [
        (r.method, r.path, r.headers.get("content-type", ""), json.loads(r.body))
        for r in cluster.fake.api.writes
        if r.path.endswith("/scale")
    ]


def test_stop_sends_kubectl_scales_request_to_the_scale_subresource(kube_clusters: Any) -> None:
    reference, bot = kube_clusters(), kube_clusters()
    for cluster in (reference, bot):
        workers(cluster)
    done = reference.kubectl("scale", f"deployment/{WORKER}", "-n", NS, "--replicas=0")
    assert done.returncode == 0, done.stderr
    stop(bot).run(context())
    assert scale_requests(bot) == scale_requests(reference)
    assert scale_requests(bot) == [
        (
            "PATCH",
            f"/apis/apps/v1/namespaces/{NS}/deployments/{WORKER}/scale",
            "application/merge-patch+json",
            {"spec": {"replicas": 0}},
        )
    ]


def test_stop_waits_for_terminating_pods_and_names_them(kube: KubeCluster) -> None:
    workers(kube)
    kube.fake.terminate_delay = FROZEN  # the workers take their whole 30 s grace period
    lines: list[str] = []
    seen: dict[str, Any] = {}

    def emit(line: str) -> None:
        lines.append(line)
        if "terminating" in line and not seen:
            seen["pods"] = kube.fake.pods(NS, WORKER)
            seen["status"] = kube.fake.deployment(NS, WORKER)["status"]
            kube.fake.advance_clock(31)  # the grace period ends: the kubelet kills them

    result = stop(kube).run(context(emit=emit))
    assert len(seen["pods"]) == 2 and seen["status"].get("replicas", 0) == 0
    waiting = next(line for line in lines if "terminating" in line)
    for pod in seen["pods"]:
        assert f"{pod['metadata']['name']} (terminating, grace period 30s)" in waiting
    assert kube.fake.pods(NS, WORKER) == []
    assert result.data["replicas_before_stop"] == {WORKER: 2}


def test_keda_is_paused_while_stopped_and_restored_after(kube: KubeCluster) -> None:
    workers(kube)
    scaled_object(kube, {PAUSED: "false"})
    assert kube.kubectl("scale", f"deployment/{WORKER}", "-n", NS, "--replicas=0").returncode == 0
    wait_for(lambda: replicas(kube) == 2, what="KEDA to bring the worker back")

    memory: dict[str, Any] = {}
    stop(kube).run(context(memory))
    kube.fake.autoscalers.sync_all()
    kube.fake.settle(NS, WORKER)
    annotations = kube.fake.store.get("scaledobjects", NS, "worker-queue")["metadata"][
        "annotations"
    ]
    assert (replicas(kube), annotations[PAUSED_REPLICAS]) == (0, "0")
    assert json.loads(annotations[RECORD]) == {PAUSED_REPLICAS: None, PAUSED: "false"}

    start(kube).run(context(memory))
    annotations = kube.fake.store.get("scaledobjects", NS, "worker-queue")["metadata"][
        "annotations"
    ]
    assert annotations == {PAUSED: "false"}
    assert replicas(kube) == 2


def test_keda_restore_after_lost_memory_uses_the_annotation(kube: KubeCluster) -> None:
    workers(kube)
    scaled_object(kube, {PAUSED_REPLICAS: "1"})
    stop(kube).run(context())
    stop(kube).run(context())  # a second stop must not record the bot's own "0"
    start(kube).run(context({}))
    annotations = kube.fake.store.get("scaledobjects", NS, "worker-queue")["metadata"][
        "annotations"
    ]
    assert annotations == {PAUSED_REPLICAS: "1"}


def test_hpa_is_disabled_while_the_worker_is_at_zero(kube: KubeCluster) -> None:
    workers(kube)
    hpa(kube)
    kube.fake.set_demand(NS, "worker-cpu", 4)
    stop(kube).run(context())
    kube.fake.autoscalers.sync_all()
    status = kube.fake.store.get("horizontalpodautoscalers", NS, "worker-cpu")["status"]
    assert status["conditions"][-1]["reason"] == "ScalingDisabled"
    assert replicas(kube) == 0
    start(kube).run(context())
    wait_for(lambda: replicas(kube) == 4, what="the HPA to take over again")


def _target(cluster: KubeCluster) -> KubernetesTarget:
    params = KubernetesParams(
        kind="kubernetes",
        namespace=NS,
        deployment="voxflow-api",
        workers=[WORKER],
        connection=cluster.connection,
    )
    return KubernetesTarget(params)


def test_plan_names_the_workers_autoscalers(kube: KubeCluster) -> None:
    workers(kube)
    kube.fake.add_deployment(NS, "voxflow-api", images=["voxflow/api:v1", "voxflow/api:v2"])
    scaled_object(kube)
    hpa(kube)
    notes = _target(kube).plan(None).notes
    assert any(n.startswith("scaledobject/worker-queue autoscales") for n in notes)
    assert any("horizontalpodautoscaler/worker-cpu" in n and "ScalingDisabled" in n for n in notes)


def test_plan_refuses_an_hpa_that_scales_from_zero(kube: KubeCluster) -> None:
    workers(kube)
    kube.fake.add_deployment(NS, "voxflow-api", images=["voxflow/api:v1", "voxflow/api:v2"])
    hpa(kube, min_replicas=0)
    with pytest.raises(PlanningError, match="minReplicas 0"):
        _target(kube).plan(None)
