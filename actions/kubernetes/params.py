"""The Kubernetes target's parameters: pydantic only, so the config loads without the client."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from actions.git.params import ChangeSource, GitSource
from actions.params import SchemaLink, Strict, seconds_of


class KubeConnection(Strict):
    """In-cluster service account, or a kubeconfig file with an optional context."""

    mode: Literal["in-cluster", "kubeconfig"] = "kubeconfig"
    kubeconfig: str | None = None
    context: str | None = None


class KubernetesParams(Strict):
    """A workload to roll back and the worker Deployments stopped meanwhile."""

    kind: Literal["kubernetes"]
    namespace: str
    workload: Literal["deployment", "statefulset", "daemonset"] = "deployment"
    name: str
    deployment: str | None = None
    workers: list[str] = []
    connection: KubeConnection = KubeConnection()
    rollout_timeout: float = 300.0
    gitops_guard: bool = True
    argocd_namespace: str = "argocd"
    recheck_after: float = 600.0
    """Seconds after a successful rollback to re-read the pod template (`10m`, `30s`; 0: off)."""
    schema_from: SchemaLink | None = None
    verify_images: bool = True
    """Ask each image's registry (HEAD of its manifest) before approval; false where the bot
    cannot reach the registries: the verdict then says the images were not checked."""
    git: GitSource | None = None
    changes: ChangeSource | None = None
    """Read, before approval, which commits the rollback undoes (actions/undone.py)."""
    """Where Git names the workload's images: after a verified rollback the bot proposes
    the change that makes Git name what production runs (actions/git)."""

    @field_validator("recheck_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds_of(value)

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, data: Any) -> Any:
        """Take the name from `name:`, or from `deployment:` for a Deployment (older configs)."""
        if not isinstance(data, dict):
            return data
        name, deployment = data.get("name"), data.get("deployment")
        workload = data.get("workload", "deployment")
        if deployment is not None and workload != "deployment":
            raise ValueError(
                f"'deployment:' names a Deployment; for workload: {workload} give the name "
                "as 'name:'"
            )
        if name is not None and deployment is not None and name != deployment:
            raise ValueError("give the workload's name once, as 'name:' (or 'deployment:')")
        if name is None and deployment is None:
            raise ValueError(
                "give the workload's name as 'name:' ('deployment:' also works for a Deployment)"
            )
        data = dict(data, name=name if name is not None else deployment)
        if workload == "deployment":
            data["deployment"] = data["name"]
        return data
