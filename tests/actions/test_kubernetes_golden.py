"""The bot's rollout undo does what `kubectl rollout undo` does, checked against the real kubectl.

Two identical fake clusters are built; kubectl (/usr/bin/kubectl) undoes on one,
the bot's `rollout_undo` on the other. The messages (or errors) must be the
same, and so must the Deployments afterwards (template and annotations) and
the ReplicaSets' revisions once the controller has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PermanentError, StepContext
from actions.kubernetes import RolloutStatus, rollout_undo

if TYPE_CHECKING:
    from tests.fakes.kube import ClusterFactory, KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NAMESPACE = "voxflow-prod"
CHANGE_CAUSE = "kubernetes.io/change-cause"
SIDECAR_RELEASE = {
    "metadata": {"annotations": {CHANGE_CAUSE: "add the proxy sidecar"}},
    "spec": {
        "template": {
            "metadata": {"annotations": {"prometheus.io/scrape": "true"}},
            "spec": {
                "containers": [
                    {
                        "name": "api",
                        "image": "voxflow/api:v1.3.1",
                        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                        "ports": [{"containerPort": 3000, "name": "http"}],
                    },
                    {"name": "proxy", "image": "envoyproxy/envoy:v1.30.1"},
                ]
            },
        }
    },
}
# Annotations only the Deployment carries: kubectl keeps last-applied and drops the rest.
DEPLOYMENT_ONLY = {
    "metadata": {
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Deployment"}',
            "voxflow.io/owner": "platform-team",
        }
    }
}


def build(cluster: KubeCluster, *, paused: bool = False) -> None:
    """Give a cluster voxflow-api with four revisions and voxflow-solo with one."""
    fake = cluster.fake
    images = ["voxflow/api:v1.2.2", "voxflow/api:v1.2.3", "voxflow/api:v1.3.0"]
    fake.add_deployment(NAMESPACE, "voxflow-api", images=images, replicas=3, container_name="api")
    fake.update_deployment(NAMESPACE, "voxflow-api", SIDECAR_RELEASE)
    fake.settle(NAMESPACE, "voxflow-api")
    fake.update_deployment(NAMESPACE, "voxflow-api", DEPLOYMENT_ONLY)
    fake.settle(NAMESPACE, "voxflow-api")
    fake.add_deployment(NAMESPACE, "voxflow-solo", images=["voxflow/solo:v1"])
    if paused:
        fake.pause(NAMESPACE, "voxflow-api")


def snapshot(cluster: KubeCluster, name: str) -> dict[str, Any]:
    """Return what must match: the Deployment's template and annotations, and the history."""
    deployment = cluster.fake.settle(NAMESPACE, name)
    history = [
        (
            rs["metadata"]["name"],
            rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision"),
            rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision-history"),
        )
        for rs in cluster.fake.replica_sets(NAMESPACE, name)
    ]
    return {
        "template": deployment["spec"]["template"],
        "annotations": deployment["metadata"]["annotations"],
        "history": history,
    }


@dataclass(frozen=True)
class Case:
    deployment: str
    to_revision: int
    paused: bool = False

    def kubectl_args(self) -> list[str]:
        args = ["rollout", "undo", f"deployment/{self.deployment}", "-n", NAMESPACE]
        return args + ([f"--to-revision={self.to_revision}"] if self.to_revision else [])


CASES = {
    "previous revision": Case("voxflow-api", 0),
    "named revision": Case("voxflow-api", 2),
    "oldest revision": Case("voxflow-api", 1),
    "revision already current": Case("voxflow-api", 4),
    "missing revision": Case("voxflow-api", 9),
    "no history": Case("voxflow-solo", 0),
    "paused deployment": Case("voxflow-api", 0, paused=True),
}


def bot_undo(cluster: KubeCluster, case: Case) -> tuple[int, str]:
    """Run the bot's undo; return kubectl's exit code and the line kubectl would print."""
    try:
        message = rollout_undo(
            cluster.apps, namespace=NAMESPACE, name=case.deployment, to_revision=case.to_revision
        )
    except PermanentError as exc:
        return 1, f"error: {exc}"
    return 0, message


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_undo_matches_kubectl(kube_clusters: ClusterFactory, case: Case) -> None:
    reference, bot = kube_clusters(), kube_clusters()
    for cluster in (reference, bot):
        build(cluster, paused=case.paused)
    assert snapshot(reference, case.deployment) == snapshot(bot, case.deployment)

    expected = reference.kubectl(*case.kubectl_args())
    code, line = bot_undo(bot, case)

    assert (code, line) == (expected.returncode, (expected.stdout or expected.stderr).strip())
    assert snapshot(bot, case.deployment) == snapshot(reference, case.deployment)


def test_undo_to_previous_restores_the_previous_template(kube_clusters: ClusterFactory) -> None:
    cluster = kube_clusters()
    build(cluster)
    rollout_undo(cluster.apps, namespace=NAMESPACE, name="voxflow-api")
    containers = snapshot(cluster, "voxflow-api")["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["voxflow/api:v1.3.0"]
    annotations = snapshot(cluster, "voxflow-api")["annotations"]
    assert "voxflow.io/owner" not in annotations
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations


def test_status_after_undo_ends_as_kubectls(kube_clusters: ClusterFactory) -> None:
    reference, bot = kube_clusters(ready_delay=0.05), kube_clusters(ready_delay=0.05)
    for cluster in (reference, bot):
        build(cluster)
    reference.kubectl("rollout", "undo", "deployment/voxflow-api", "-n", NAMESPACE)
    rollout_undo(bot.apps, namespace=NAMESPACE, name="voxflow-api")

    expected = reference.kubectl(
        "rollout", "status", "deployment/voxflow-api", "-n", NAMESPACE, "--timeout=20s"
    )
    step = RolloutStatus(apps=bot.apps, namespace=NAMESPACE, deployment="voxflow-api")
    result = step.run(StepContext.for_test(timeout=20.0))

    assert expected.returncode == 0, expected.stderr
    assert result.summary == expected.stdout.strip().splitlines()[-1]
    assert snapshot(bot, "voxflow-api") == snapshot(reference, "voxflow-api")
