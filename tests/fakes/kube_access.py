"""The app, its workers, a ScaledObject and an Argo CD Application on the Kubernetes stand-in,
with the shipped RBAC manifest (or a changed one) enforced for the bot's token."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from actions.kubernetes import KubeConnection, KubernetesParams, KubernetesTarget

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster


NS = "voxflow-prod"
API = "voxflow-api"
WORKER = "voxflow-worker"
TOKEN = "rollback-bot-token"
USER = "system:serviceaccount:rollback-bot:rollback-bot"
MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


def cluster_as_bot(kube: KubeCluster, tmp_path: Path, manifest: str) -> KubernetesTarget:
    """Build the app, workers, a ScaledObject and an Argo CD app; enforce `manifest` for the bot."""
    fake = kube.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1", "voxflow/api:v2"], replicas=2)
    fake.update_deployment(NS, API, {"metadata": {"labels": {"app.kubernetes.io/instance": "vf"}}})
    fake.add_deployment(NS, WORKER, images=["voxflow/worker:v1"], replicas=2)
    fake.store.create(
        "scaledobjects",
        {"metadata": {"name": "q", "namespace": NS}, "spec": {"scaleTargetRef": {"name": WORKER}}},
    )
    fake.store.create(
        "applications",
        {
            "metadata": {"name": "vf", "namespace": "argocd"},
            "spec": {"syncPolicy": {"automated": {"selfHeal": True}}},
        },
    )
    fake.enforce_rbac(manifest, token=TOKEN, user=USER)
    kubeconfig = fake.write_kubeconfig(tmp_path / "bot-kubeconfig", token=TOKEN)
    params = KubernetesParams(
        kind="kubernetes",
        namespace=NS,
        deployment=API,
        workers=[WORKER],
        connection=KubeConnection(kubeconfig=str(kubeconfig), context="sandbox"),
    )
    return KubernetesTarget(params)


def without(manifest: str, line: str) -> str:
    assert line in manifest
    return manifest.replace(line, "", 1)
