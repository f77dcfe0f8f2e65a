"""StatefulSet and DaemonSet undo, status and scale match the real kubectl, on identical clusters.

kubectl (/usr/bin/kubectl) works on one cluster, the bot on the other: the
lines printed, the request sent (method, path, content type, JSON body) and
the workload and its ControllerRevisions afterwards must be the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PermanentError, StepContext
from actions.kubernetes.workers import scale
from actions.kubernetes.workloads import Kind, WorkloadStatus, workload_undo

if TYPE_CHECKING:
    from tests.fakes.kube import ClusterFactory, KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
PLURAL = {"statefulset": "statefulsets", "daemonset": "daemonsets"}
IMAGES = ["voxflow/db:v1", "voxflow/db:v2", "voxflow/db:v3"]


def build(cluster: KubeCluster) -> None:
    fake = cluster.fake
    fake.add_workload("statefulsets", NS, "db", images=IMAGES, replicas=3)
    fake.add_workload("statefulsets", NS, "shard", images=IMAGES[:2], replicas=3)
    shard = fake.store.get("statefulsets", NS, "shard")  # all pods at v2, then a partition
    shard["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    fake.store.update("statefulsets", shard)
    fake.workloads.sync("statefulsets", NS, "shard", settle=True)
    fake.add_workload("statefulsets", NS, "single", images=IMAGES[:1], replicas=1)
    fake.add_workload("daemonsets", NS, "agent", images=["voxflow/agent:v1", "voxflow/agent:v2"])


def snapshot(cluster: KubeCluster, kind: Kind, name: str) -> dict[str, Any]:
    fake = cluster.fake
    workload = fake.settle_workload(PLURAL[kind], NS, name)
    revisions = [
        (r["metadata"]["name"], r["revision"])
        for r in fake.controller_revisions(PLURAL[kind], NS, name)
    ]
    return {"template": workload["spec"]["template"], "revisions": revisions}


def patches(cluster: KubeCluster) -> list[tuple[str, str, str, Any]]:
    return [
        (r.method, r.path, r.headers.get("content-type", ""), json.loads(r.body))
        for r in cluster.fake.api.writes
        if r.method == "PATCH"
    ]


@dataclass(frozen=True)
class Case:
    kind: Kind
    name: str
    to_revision: int

    def kubectl_args(self) -> list[str]:
        args = ["rollout", "undo", f"{self.kind}/{self.name}", "-n", NS]
        return args + ([f"--to-revision={self.to_revision}"] if self.to_revision else [])


CASES = {
    "statefulset previous": Case("statefulset", "db", 0),
    "statefulset named": Case("statefulset", "db", 1),
    "statefulset current": Case("statefulset", "db", 3),
    "statefulset missing": Case("statefulset", "db", 9),
    "statefulset no history": Case("statefulset", "single", 0),
    "statefulset partitioned": Case("statefulset", "shard", 1),
    "daemonset previous": Case("daemonset", "agent", 0),
    "daemonset current": Case("daemonset", "agent", 2),
}


def bot_undo(cluster: KubeCluster, case: Case) -> tuple[int, str]:
    try:
        line = workload_undo(
            cluster.apps, case.kind, namespace=NS, name=case.name, to_revision=case.to_revision
        )
    except PermanentError as exc:
        return 1, f"error: {exc}"
    return 0, line


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_undo_matches_kubectl(kube_clusters: ClusterFactory, case: Case) -> None:
    reference, bot = kube_clusters(), kube_clusters()
    for cluster in (reference, bot):
        build(cluster)
    assert snapshot(reference, case.kind, case.name) == snapshot(bot, case.kind, case.name)

    expected = reference.kubectl(*case.kubectl_args())
    code, line = bot_undo(bot, case)

    assert (code, line) == (expected.returncode, (expected.stdout or expected.stderr).strip())
    assert patches(bot) == patches(reference)
    assert snapshot(bot, case.kind, case.name) == snapshot(reference, case.kind, case.name)


@pytest.mark.parametrize(
    ("kind", "name", "to_revision"),
    [("statefulset", "db", 1), ("statefulset", "shard", 1), ("daemonset", "agent", 1)],
    ids=["statefulset", "partitioned statefulset", "daemonset"],
)
def test_status_after_undo_ends_as_kubectls(
    kube_clusters: ClusterFactory, kind: Kind, name: str, to_revision: int
) -> None:
    reference, bot = kube_clusters(ready_delay=0.05), kube_clusters(ready_delay=0.05)
    for cluster in (reference, bot):
        build(cluster)
    reference.kubectl("rollout", "undo", f"{kind}/{name}", "-n", NS, f"--to-revision={to_revision}")
    workload_undo(bot.apps, kind, namespace=NS, name=name, to_revision=to_revision)

    expected = reference.kubectl("rollout", "status", f"{kind}/{name}", "-n", NS, "--timeout=20s")
    lines: list[str] = []
    step = WorkloadStatus(apps=bot.apps, kind=kind, namespace=NS, workload=name)
    result = step.run(StepContext.for_test(timeout=20.0, emit=lines.append))

    assert expected.returncode == 0, expected.stderr
    assert result.summary == expected.stdout.strip().splitlines()[-1]
    assert snapshot(bot, kind, name) == snapshot(reference, kind, name)


def _shard_pods(cluster: KubeCluster) -> dict[str, tuple[str, str]]:
    return {
        p["metadata"]["name"]: (p["metadata"]["uid"], p["spec"]["containers"][0]["image"])
        for p in cluster.fake.store.list("pods", NS)
        if p["metadata"]["name"].startswith("shard-")
    }


def test_partition_keeps_the_pods_below_it(kube_clusters: ClusterFactory) -> None:
    cluster = kube_clusters()
    build(cluster)
    before = _shard_pods(cluster)
    assert [image for _, image in before.values()] == [IMAGES[1]] * 3
    workload_undo(cluster.apps, "statefulset", namespace=NS, name="shard", to_revision=1)
    WorkloadStatus(apps=cluster.apps, kind="statefulset", namespace=NS, workload="shard").run(
        StepContext.for_test(timeout=20.0)
    )
    after = _shard_pods(cluster)
    assert after["shard-2"][1] == IMAGES[0] and after["shard-2"][0] != before["shard-2"][0]
    assert (after["shard-0"], after["shard-1"]) == (before["shard-0"], before["shard-1"])


def test_scale_sends_kubectls_request(kube_clusters: ClusterFactory) -> None:
    reference, bot = kube_clusters(), kube_clusters()
    for cluster in (reference, bot):
        build(cluster)
    done = reference.kubectl("scale", "statefulset/db", "-n", NS, "--replicas=1")
    assert (done.returncode, done.stdout.strip()) == (0, "statefulset.apps/db scaled")
    scale(bot.apps, namespace=NS, name="db", replicas=1, kind="statefulset")
    assert patches(bot) == patches(reference)
    for cluster in (reference, bot):
        cluster.fake.settle_workload("statefulsets", NS, "db")
    assert [
        p["metadata"]["name"]
        for p in bot.fake.store.list("pods", NS)
        if "db-" in p["metadata"]["name"]
    ] == ["db-0"]
