"""Forced rollback: an OrderedReady StatefulSet's pod stuck on the bad revision is deleted.

The stand-in's StatefulSet controller stops at a pod that is not Running and
Ready, as upstream's monotonic mode does (tests/sandbox/test_kubernetes_controllers.py
shows the revert alone leaves it), so without the step the rollout never ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actions.base import Level, StepContext, spec_of
from actions.kubernetes import KubernetesParams, KubernetesTarget
from sandbox.kubernetes.pods import ready_since
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
IMAGES = ["voxflow/db:v1", "voxflow/db:v2"]
BAD = "voxflow/db:v3"


def target(cluster: KubeCluster) -> KubernetesTarget:
    params = KubernetesParams(
        kind="kubernetes",
        namespace=NS,
        workload="statefulset",
        name="db",
        connection=cluster.connection,
    )
    return KubernetesTarget(params)


def pods(cluster: KubeCluster) -> list[tuple[str, bool]]:
    found = sorted(
        (p for p in cluster.fake.store.list("pods", NS) if p["metadata"]["name"].startswith("db-")),
        key=lambda p: p["metadata"]["name"],
    )
    return [(p["spec"]["containers"][0]["image"], ready_since(p) is not None) for p in found]


def release(cluster: KubeCluster, image: str, *, policy: str = "OrderedReady") -> None:
    """Two replicas on v2, then `image` released; wait until db-1 runs it."""
    cluster.fake.add_workload(
        "statefulsets", NS, "db", images=IMAGES, extra={"podManagementPolicy": policy}
    )
    cluster.fake.set_image("statefulsets", NS, "db", image)
    wait_for(lambda: pods(cluster)[1][0] == image, what="db-1 to be recreated on the release")


def run(plan: Any) -> list[Any]:
    ctx = StepContext.for_test(timeout=20.0)
    return [step.run(ctx) for step in plan.rollback + plan.verify]


def test_pod_stuck_on_the_bad_revision_is_deleted_after_the_revert(kube: KubeCluster) -> None:
    kube.fake.break_image(BAD)
    release(kube, BAD)
    plan = target(kube).plan(None)
    assert [s.name for s in plan.rollback] == [
        "kubernetes.workload_undo",
        "kubernetes.forced_rollback",
    ]
    forced = plan.rollback[1]
    assert "that are not Running and Ready" in forced.describe()
    assert any("OrderedReady" in n and "forced rollback" in n for n in plan.notes)
    results = run(plan)
    assert results[1].data == {"deleted": ["db-1"]}
    assert pods(kube) == [(IMAGES[1], True), (IMAGES[1], True)]
    assert results[2].summary.startswith("partitioned roll out complete: 2 new pods")


def test_ready_pods_on_the_bad_revision_are_left_to_the_rolling_update(kube: KubeCluster) -> None:
    release(kube, BAD)
    wait_for(lambda: pods(kube) == [(BAD, True)] * 2, what="the release to roll out")
    results = run(target(kube).plan(None))
    assert results[1].skipped
    assert pods(kube) == [(IMAGES[1], True), (IMAGES[1], True)]


def test_parallel_statefulset_gets_no_forced_step(kube: KubeCluster) -> None:
    kube.fake.break_image(BAD)
    release(kube, BAD, policy="Parallel")
    plan = target(kube).plan(None)
    assert [s.name for s in plan.rollback] == ["kubernetes.workload_undo"]
    run(plan)  # upstream's Parallel controller replaces the stuck pod itself
    assert pods(kube) == [(IMAGES[1], True), (IMAGES[1], True)]


def test_forced_step_is_rebuilt_from_its_stored_spec(kube: KubeCluster) -> None:
    kube.fake.break_image(BAD)
    release(kube, BAD)
    chosen = target(kube)
    forced = chosen.plan(None).rollback[1]
    assert chosen.restore(forced.name, spec_of(forced)) == forced


def test_daemonset_replaces_its_pod_stuck_on_the_bad_release_by_itself(kube: KubeCluster) -> None:
    """update.go rollingUpdate replaces an unavailable old pod at once: no forcing needed."""
    kube.fake.break_image(BAD)
    kube.fake.add_workload("daemonsets", NS, "agent", images=IMAGES)
    kube.fake.set_image("daemonsets", NS, "agent", BAD)
    agent = KubernetesTarget(
        KubernetesParams(
            kind="kubernetes",
            namespace=NS,
            workload="daemonset",
            name="agent",
            connection=kube.connection,
        )
    )
    wait_for(
        lambda: (
            BAD in [p["spec"]["containers"][0]["image"] for p in kube.fake.store.list("pods", NS)]
        ),
        what="a node to run the bad release",
    )
    plan = agent.plan(None)
    assert [s.name for s in plan.rollback] == ["kubernetes.workload_undo"]
    results = run(plan)
    assert results[-1].summary == 'daemon set "agent" successfully rolled out'


def test_statefulset_claims_are_named_risky_before_approval(kube: KubeCluster) -> None:
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    kube.fake.add_workload(
        "statefulsets", NS, "db", images=IMAGES, extra={"volumeClaimTemplates": [claim]}
    )
    findings = [f for f in target(kube).evidence(None) if "PersistentVolumeClaims" in f.text]
    assert [f.level for f in findings] == [Level.RISKY]
    assert "(data-db-N)" in findings[0].text
