"""A rollback whose Git change the bot proposed, with sync held: the world the hold tests share.

voxflow-api runs on the Kubernetes stand-in, deployed by an Argo CD Application (or a Flux
Kustomization) that follows a real branch of a bare repository (`GitOps.follow`): a
kustomization whose `images:` entry names the bad release v3, rendered by the real
`kubectl kustomize`. The GitHub API is the stand-in of sandbox/forges.py over that
repository. A real runner rolls back to v2 and proposes the pull request; sync stays held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.config import RollbackConfig
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.recheck import Rechecks
from bot.execution.runner import NullProgress, Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Recheck, Run
from bot.persistence.store import Store
from sandbox.forges import Forges
from tests.fakes.config import ALICE, BOB, Clock
from tests.fakes.git_deploy import Deploy
from tests.fakes.gitops import API, AUTOMATED, IMAGES, NS, image, kube_config
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

TOKEN = "ghp_the_bots_token_for_voxflow_deploy"
PROJECT = "voxflow/deploy"
APP = ("applications", "argocd", "voxflow")
KUSTOMIZATION_OWNER = ("kustomizations", "flux-system", "apps")
DEPLOYMENT = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {API}
spec:
  selector: {{matchLabels: {{app: {API}}}}}
  template:
    metadata: {{labels: {{app: {API}}}}}
    spec:
      containers:
        - name: {API}
          image: voxflow/api:v1
"""


def kustomization(tag: str) -> str:
    return f"""\
resources:
  - deployment.yaml
images:
  - name: voxflow/api
    newTag: {tag}   # set by the release job
"""


def set_tag(deploy: Deploy, tag: str, message: str) -> str:
    """A developer's commit on main that sets the image tag; its sha."""
    return deploy.commit({"apps/api/kustomization.yaml": kustomization(tag)}, message)


@dataclass
class Held:
    """The world after the rollback, and the moves a test makes in it."""

    kube: KubeCluster
    deploy: Deploy
    forges: Forges
    store: Store
    config: RollbackConfig
    run: Run
    owner: tuple[str, str, str]

    def process(self, store: Store | None = None) -> Rechecks:
        """The re-checks of one bot process (its own owner name, a fresh planner)."""
        return Rechecks(store=store or self.store, config=self.config, planner=Planner())

    def hold(self, store: Store | None = None) -> Recheck:
        (row,) = [r for r in (store or self.store).rechecks(self.run.id) if r.step == "git.hold"]
        return row

    def said(self, store: Store | None = None) -> list[dict[str, Any]]:
        """What the hold told the thread, in order."""
        messages = (store or self.store).outbox(self.run.id)
        return [m.detail for m in messages if m.kind == "gitops.hold"]

    def resumed(self) -> list[dict[str, Any]]:
        return [m.detail for m in self.store.outbox(self.run.id) if m.kind == "gitops.resumed"]

    def syncs(self) -> bool:
        """Whether the owner syncs automatically now."""
        owner = self.kube.fake.store.get(*self.owner)
        if self.owner == APP:
            return bool((owner["spec"].get("syncPolicy") or {}).get("automated"))
        return not owner["spec"].get("suspend")

    def refreshed(self) -> bool:
        """Whether the owner has handled the reconcile the bot asked for."""
        owner = self.kube.fake.store.get(*self.owner)
        annotations = owner["metadata"].get("annotations") or {}
        if self.owner == APP:
            return "argocd.argoproj.io/refresh" not in annotations
        handled = (owner.get("status") or {}).get("lastHandledReconcileAt")
        return handled is not None and handled == annotations.get("reconcile.fluxcd.io/requestedAt")

    def image(self) -> str:
        return image(self.kube)


@pytest.fixture
def forges() -> Iterator[Forges]:
    served = Forges().start()
    served.grant(TOKEN)
    try:
        yield served
    finally:
        served.stop()


def owned_by(kube: KubeCluster, deploy: Deploy, tool: str) -> tuple[str, str, str]:
    """voxflow-api at v3, deployed by Argo CD (or a Flux Kustomization) from the branch."""
    fake = kube.fake
    fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    if tool == "argocd":
        fake.update_deployment(
            NS, API, {"metadata": {"labels": {"app.kubernetes.io/instance": "voxflow"}}}
        )
        source = {"repoURL": deploy.url, "path": "apps/api", "targetRevision": "main"}
        spec = {"project": "default", "source": source, "syncPolicy": {"automated": AUTOMATED}}
        fake.store.create(
            "applications", {"metadata": {"name": "voxflow", "namespace": "argocd"}, "spec": spec}
        )
        owner = APP
    else:
        group = "kustomize.toolkit.fluxcd.io"
        labels = {f"{group}/name": "apps", f"{group}/namespace": "flux-system"}
        fake.update_deployment(NS, API, {"metadata": {"labels": labels}})
        fake.store.create(
            "kustomizations",
            {
                "metadata": {"name": "apps", "namespace": "flux-system"},
                "spec": {"interval": "1m", "path": "./apps/api", "prune": True},
            },
        )
        owner = KUSTOMIZATION_OWNER
    fake.gitops.follow(
        owner, ("deployments", NS, API), repository=deploy.bare, path="apps/api", branch="main"
    )
    return owner


def deploy_repository(tmp_path: Path, forges: Forges) -> Deploy:
    """The deploy repository after the bad release (v3), served by the GitHub stand-in."""
    files = {
        "apps/api/deployment.yaml": DEPLOYMENT,
        "apps/api/kustomization.yaml": kustomization("v2"),
    }
    deploy = Deploy(tmp_path, files)
    set_tag(deploy, "v3", "release v3")
    forges.add(PROJECT, deploy.bare)
    return deploy


def git_source(deploy: Deploy, forges: Forges) -> dict[str, Any]:
    """The target's `git:` section: pull requests on the stand-in, the token from the env."""
    return {
        "repository": deploy.url,
        "path": "apps/api",
        "provider": "github",
        "project": PROJECT,
        "api_url": forges.url,
        "token": {"env": "BOT_GIT_TOKEN"},
    }


def held_world(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    tool: str = "argocd",
) -> Held:
    """Roll voxflow-api back from v3 to v2 with a real runner; the pull request is open."""
    monkeypatch.setenv("BOT_GIT_TOKEN", TOKEN)
    deploy = deploy_repository(tmp_path, forges)
    owner = owned_by(kube, deploy, tool)
    config = kube_config(kube, recheck_after=0, git=git_source(deploy, forges))
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
    done = store.run(run.id)
    assert done is not None and done.state == "succeeded", done and done.outcome
    assert image(kube) == IMAGES[1]
    world = Held(kube, deploy, forges, store, config, done, owner)
    assert not world.syncs()
    return world


def settle_reconcile(world: Held) -> None:
    """Wait until the owner has handled the reconcile the bot asked for."""
    wait_for(world.refreshed, what="the GitOps owner to handle the reconcile the bot asked for")


def resume(world: Held, clock: Clock, store: Store | None = None) -> None:
    """Poll once Git matches: Argo CD first compares (the bot waits for it), then sync resumes."""
    assert world.process(store).run_due() == 0
    if world.owner == APP:
        row = world.hold(store)
        assert row.spec["phase"] == "comparing" and not world.syncs(), row.outcome
        settle_reconcile(world)
        clock.advance(seconds=5)
        assert world.process(store).run_due() == 0
    row = world.hold(store)
    assert row.spec["phase"] == "reconciling" and world.syncs(), row.outcome
