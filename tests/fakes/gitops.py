"""A Deployment owned by Argo CD or Flux on the Kubernetes stand-in, whose GitOps owner puts
Git's template (the bad version) back while it syncs automatically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.config import RollbackConfig, parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.recheck import Rechecks
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store
from tests.fakes.config import ALICE, BOB, config_dict

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster


NS = "voxflow-prod"
API = "voxflow-api"
IMAGES = ["voxflow/api:v1", "voxflow/api:v2", "voxflow/api:v3"]
APP = ("applications", "argocd", "voxflow")
AUTOMATED = {"prune": True, "selfHeal": True}


def image(cluster: KubeCluster) -> str:
    containers = cluster.fake.deployment(NS, API)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["image"])


def argocd(cluster: KubeCluster, *, tracking_id: bool = False) -> None:
    fake = cluster.fake
    fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    marks: dict[str, Any] = (
        {"annotations": {"argocd.argoproj.io/tracking-id": f"voxflow:apps/Deployment:{NS}/{API}"}}
        if tracking_id
        else {"labels": {"app.kubernetes.io/instance": "voxflow"}}
    )
    fake.update_deployment(NS, API, {"metadata": marks})
    application = {
        "metadata": {"name": "voxflow", "namespace": "argocd"},
        "spec": {"project": "default", "syncPolicy": {"automated": AUTOMATED}},
    }
    fake.store.create("applications", application)
    fake.gitops.track(APP, ("deployments", NS, API))  # Git says v3, the bad release


FLUX = {
    "flux-kustomization": ("kustomizations", "kustomize.toolkit.fluxcd.io", "v1"),
    "flux-helmrelease": ("helmreleases", "helm.toolkit.fluxcd.io", "v2"),
}


def flux(cluster: KubeCluster, tool: str = "flux-kustomization") -> tuple[str, str, str]:
    fake = cluster.fake
    resource, group, _ = FLUX[tool]
    fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    labels = {f"{group}/name": "apps", f"{group}/namespace": "flux-system"}
    fake.update_deployment(NS, API, {"metadata": {"labels": labels}})
    fake.store.create(
        resource,
        {"metadata": {"name": "apps", "namespace": "flux-system"}, "spec": {"interval": "1m"}},
    )
    owner = (resource, "flux-system", "apps")
    fake.gitops.track(owner, ("deployments", NS, API))
    return owner


def kube_config(kube: KubeCluster, **target: Any) -> RollbackConfig:
    raw = config_dict()
    raw["environments"]["prod"]["targets"] = {
        "app": {
            "kind": "kubernetes",
            "namespace": NS,
            "deployment": API,
            "connection": {"kubeconfig": str(kube.kubeconfig), "context": "sandbox"},
            "rollout_timeout": 30,
            **target,
        }
    }
    return parse_config(raw, path=Path("test.yml"))


@dataclass
class World:
    store: Store
    config: RollbackConfig
    planner: Planner
    run: Run

    def process(self, store: Store | None = None) -> Rechecks:
        """The re-checks of one bot process (its own owner name)."""
        return Rechecks(store=store or self.store, config=self.config, planner=self.planner)

    def messages(self, *kinds: str) -> list[Any]:
        return [m for m in self.store.outbox.messages(self.run.id) if m.kind in kinds]


@pytest.fixture
def rolled_back(kube: KubeCluster, store: Store) -> World:
    """voxflow-api rolled back from v3 to v2 by a real runner; Argo CD left suspended."""
    argocd(kube)
    config = kube_config(kube, recheck_after="10m")
    planner, done = roll_back(kube, store, config)
    return World(store=store, config=config, planner=planner, run=done)


def roll_back(kube: KubeCluster, store: Store, config: RollbackConfig) -> tuple[Planner, Run]:
    """Roll voxflow-api back from v3 to v2 with a real runner, requested by Alice and approved
    by Bob; return the planner and the succeeded run."""
    planner = Planner()
    workflow = Workflow(store=store, config=config)
    runner = Runner(
        store=store,
        workflow=workflow,
        config=config,
        planner=planner,
        progress=NullProgress(),
        rechecks=Rechecks(store=store, config=config, planner=planner),
    )
    env = config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target="app", point=None)
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    workflow.approve(run.id, user=BOB)
    assert runner.execute(run.id)
    done = store.runs.get(run.id)
    assert done is not None and done.state == "succeeded", done and done.outcome
    assert image(kube) == IMAGES[1]
    return planner, done
