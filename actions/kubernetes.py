"""Kubernetes application rollback: rollout history, undo, status, worker scaling."""

from __future__ import annotations

from typing import Literal

from actions.params import Strict


class KubeConnection(Strict):
    """In-cluster service account, or a kubeconfig file with an optional context."""

    mode: Literal["in-cluster", "kubeconfig"] = "kubeconfig"
    kubeconfig: str | None = None
    context: str | None = None


class KubernetesParams(Strict):
    """A Deployment to roll back and the worker Deployments stopped meanwhile."""

    kind: Literal["kubernetes"]
    namespace: str
    deployment: str
    workers: list[str] = []
    connection: KubeConnection = KubeConnection()
    rollout_timeout: float = 300.0
