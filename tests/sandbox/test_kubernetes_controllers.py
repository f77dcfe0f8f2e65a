"""The stand-in's StatefulSet, DaemonSet and HPA controllers follow upstream where it differs.

Each case is one the stand-in once got wrong (issue 27): a Parallel StatefulSet
that upstream repairs by itself, percent and surge DaemonSet rollouts, the HPA's
scale-down stabilization window. A cluster that is not started is driven one
controller pass at a time, so "what one pass does" is observed exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.kubernetes import FakeKubernetes
from sandbox.kubernetes.objects import scaled_value
from sandbox.kubernetes.pods import is_terminating, ready_since
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
IMAGES = ["voxflow/db:v1", "voxflow/db:v2"]
BAD = "voxflow/db:v3"
REVISION = "controller-revision-hash"


@pytest.fixture
def idle() -> Iterator[FakeKubernetes]:
    """A stand-in whose controllers run only when a test calls them; new pods take a minute."""
    fake = FakeKubernetes(ready_delay=60.0)
    yield fake
    fake.stop()


def pods(fake: FakeKubernetes, name: str) -> list[dict[str, Any]]:
    return sorted(
        (p for p in fake.store.list("pods", NS) if p["metadata"]["name"].startswith(f"{name}-")),
        key=lambda p: p["metadata"]["name"],
    )


def image(pod: dict[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["image"])


def test_scaled_values_round_as_intstr_does() -> None:
    assert scaled_value("50%", 3, round_up=True) == 2
    assert scaled_value("50%", 3, round_up=False) == 1
    assert scaled_value(2, 10, round_up=True) == 2
    assert scaled_value(None, 10, round_up=True) == 0
    with pytest.raises(ValueError, match="invalid value"):
        scaled_value("half", 4, round_up=True)


def _stuck_statefulset(kube: KubeCluster, policy: str) -> None:
    """Two replicas on v2; v3 never becomes ready, so db-1 hangs on it; then v2 is put back."""
    fake = kube.fake
    fake.add_workload(
        "statefulsets", NS, "db", images=IMAGES, extra={"podManagementPolicy": policy}
    )
    fake.break_image(BAD)
    fake.set_image("statefulsets", NS, "db", BAD)
    wait_for(
        lambda: [image(p) for p in pods(fake, "db")] == [IMAGES[1], BAD],
        what="db-1 to be recreated on the bad image",
    )
    fake.set_image("statefulsets", NS, "db", IMAGES[1])


def test_parallel_statefulset_replaces_its_stuck_pod_once_the_template_is_reverted(
    kube: KubeCluster,
) -> None:
    _stuck_statefulset(kube, "Parallel")
    wait_for(
        lambda: (
            [(image(p), ready_since(p) is not None) for p in pods(kube.fake, "db")]
            == [(IMAGES[1], True)] * 2
        ),
        what="the Parallel StatefulSet to replace db-1 (rolling update of an unhealthy pod)",
    )
    status = kube.fake.store.get("statefulsets", NS, "db")["status"]
    assert status["currentRevision"] == status["updateRevision"]
    assert status["readyReplicas"] == 2


def test_ordered_ready_statefulset_keeps_its_stuck_pod_after_the_revert(
    kube: KubeCluster,
) -> None:
    _stuck_statefulset(kube, "OrderedReady")
    sts = kube.fake.settle_workload("statefulsets", NS, "db")
    wait_for(
        lambda: (
            kube.fake.store.get("statefulsets", NS, "db")["status"].get("observedGeneration")
            == sts["metadata"]["generation"]
        ),
        what="the controller to observe the revert",
    )
    kube.fake.settle_workload("statefulsets", NS, "db")  # the barrier: one more full pass
    stuck = pods(kube.fake, "db")[1]
    assert image(stuck) == BAD and not is_terminating(stuck) and ready_since(stuck) is None
    update = kube.fake.store.get("statefulsets", NS, "db")["status"]["updateRevision"]
    assert stuck["metadata"]["labels"][REVISION] != update


def test_daemonset_max_unavailable_percent_replaces_that_share_of_nodes(
    idle: FakeKubernetes,
) -> None:
    idle.workloads.nodes = ("n1", "n2", "n3", "n4")
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}
    idle.add_workload("daemonsets", NS, "agent", images=IMAGES, strategy=rolling)
    idle.set_image("daemonsets", NS, "agent", "voxflow/db:v3")
    idle.settle_workload("daemonsets", NS, "agent")
    running = pods(idle, "agent")
    assert sorted(image(p) for p in running) == [IMAGES[1]] * 2 + ["voxflow/db:v3"] * 2
    assert not any(is_terminating(p) for p in running)  # gone already: terminate_delay 0


def test_daemonset_max_unavailable_percent_rolls_out(kube: KubeCluster) -> None:
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}
    kube.fake.add_workload("daemonsets", NS, "agent", images=IMAGES, strategy=rolling)
    kube.fake.set_image("daemonsets", NS, "agent", "voxflow/db:v3")
    wait_for(
        lambda: (
            kube.fake.store.get("daemonsets", NS, "agent")["status"].get("updatedNumberScheduled")
            == 2
            and [image(p) for p in pods(kube.fake, "agent")] == ["voxflow/db:v3"] * 2
        ),
        what="the DaemonSet with maxUnavailable 50% to roll out",
    )


def test_daemonset_max_surge_starts_the_new_pod_beside_the_old(idle: FakeKubernetes) -> None:
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    idle.add_workload("daemonsets", NS, "agent", images=IMAGES, strategy=rolling)
    idle.set_image("daemonsets", NS, "agent", "voxflow/db:v3")
    idle.settle_workload("daemonsets", NS, "agent")
    running = pods(idle, "agent")
    assert sorted(image(p) for p in running) == [IMAGES[1]] * 2 + ["voxflow/db:v3"]
    status = idle.store.get("daemonsets", NS, "agent")["status"]
    assert status["numberAvailable"] == 2 and status.get("updatedNumberScheduled", 0) == 0
    idle.advance_clock(61)  # the surged pod becomes ready: its old pod goes, the next surges
    idle.settle_workload("daemonsets", NS, "agent")
    assert sorted(image(p) for p in pods(idle, "agent")) == [IMAGES[1]] + ["voxflow/db:v3"] * 2


def test_daemonset_max_surge_rolls_out(kube: KubeCluster) -> None:
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}
    kube.fake.add_workload("daemonsets", NS, "agent", images=IMAGES, strategy=rolling)
    kube.fake.set_image("daemonsets", NS, "agent", "voxflow/db:v3")
    wait_for(
        lambda: (
            kube.fake.store.get("daemonsets", NS, "agent")["status"].get("updatedNumberScheduled")
            == 2
            and [image(p) for p in pods(kube.fake, "agent")] == ["voxflow/db:v3"] * 2
        ),
        what="the DaemonSet with maxSurge to roll out",
    )


def _hpa(fake: FakeKubernetes, behavior: dict[str, Any] | None = None) -> None:
    fake.add_deployment(NS, "worker", images=["voxflow/worker:v1"], replicas=4)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
        "minReplicas": 1,
        "maxReplicas": 10,
    }
    if behavior is not None:
        spec["behavior"] = behavior
    fake.store.create(
        "horizontalpodautoscalers", {"metadata": {"name": "worker", "namespace": NS}, "spec": spec}
    )


def _replicas_after(fake: FakeKubernetes, seconds: float) -> int:
    fake.advance_clock(seconds)
    fake.autoscalers.sync_all()
    return int(fake.deployment(NS, "worker")["spec"]["replicas"])


def test_hpa_scales_down_only_after_the_default_five_minute_window(idle: FakeKubernetes) -> None:
    _hpa(idle)
    idle.set_demand(NS, "worker", 2)
    assert _replicas_after(idle, 0) == 4
    assert _replicas_after(idle, 299) == 4
    assert _replicas_after(idle, 2) == 2


def test_hpa_scale_down_window_comes_from_its_behavior(idle: FakeKubernetes) -> None:
    _hpa(idle, {"scaleDown": {"stabilizationWindowSeconds": 30}})
    idle.set_demand(NS, "worker", 2)
    assert _replicas_after(idle, 0) == 4
    assert _replicas_after(idle, 29) == 4
    assert _replicas_after(idle, 2) == 2
    idle.set_demand(NS, "worker", 6)
    assert _replicas_after(idle, 0) == 6  # scaling up has no window by default


def test_kubectl_delete_pod_is_graceful(kube: KubeCluster) -> None:
    kube.fake.add_workload("statefulsets", NS, "db", images=IMAGES, replicas=1)
    kube.fake.terminate_delay = 30.0  # the container takes its time to stop
    done = kube.kubectl("delete", "pod", "db-0", "-n", NS, "--wait=false")
    assert done.returncode == 0, done.stderr
    pod = kube.fake.store.get("pods", NS, "db-0")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    assert is_terminating(pod)
