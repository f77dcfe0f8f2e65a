"""The fake Kubernetes API server as pytest fixtures, with kubectl and the client wired to it.

A `KubeCluster` is one started `FakeKubernetes` with a kubeconfig for it, an
ApiClient built by the bot's own `api_client`, and a `kubectl` runner using
the real /usr/bin/kubectl. `kube_clusters` makes as many as a test needs (the
golden test wants two identical ones); all are stopped at teardown.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, AppsV1Api

from actions.kubernetes import KubeConnection, api_client
from sandbox.kubernetes import FakeKubernetes

KUBECTL = "/usr/bin/kubectl"
NAMESPACE = "voxflow-prod"


@dataclass
class KubeCluster:
    """A running fake cluster and the ways to reach it."""

    fake: FakeKubernetes
    kubeconfig: Path
    api: ApiClient
    cache_dir: Path

    @property
    def apps(self) -> AppsV1Api:
        """The apps/v1 API of the bot's client."""
        return AppsV1Api(self.api)

    @property
    def connection(self) -> KubeConnection:
        """The connection settings a config file would give for this cluster."""
        return KubeConnection(kubeconfig=str(self.kubeconfig), context="sandbox")

    def kubectl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        command = [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
        ]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )


ClusterFactory = Callable[..., KubeCluster]


@pytest.fixture
def kube_clusters(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start fake clusters on demand (keyword arguments go to FakeKubernetes); stop them all."""
    started: list[KubeCluster] = []

    def start(*, ready_delay: float = 0.0) -> KubeCluster:
        fake = FakeKubernetes(ready_delay=ready_delay).start()
        folder = tmp_path / f"cluster-{len(started)}"
        folder.mkdir()
        kubeconfig = fake.write_kubeconfig(folder / "kubeconfig")
        conn = KubeConnection(kubeconfig=str(kubeconfig), context="sandbox")
        cluster = KubeCluster(fake, kubeconfig, api_client(conn), folder / "cache")
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.api.close()
        cluster.fake.stop()


@pytest.fixture
def kube(kube_clusters: ClusterFactory) -> KubeCluster:
    """One fake cluster whose replicas become ready at once."""
    return kube_clusters()


@pytest.fixture
def apps(kube: KubeCluster) -> AppsV1Api:
    """An AppsV1Api for the `kube` cluster."""
    return kube.apps
