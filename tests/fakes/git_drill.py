"""A staging drill of a workload Argo CD or Flux deploys from a real branch, with `git:`.

The world of the hold tests (tests/fakes/git_hold.py: a bare repository whose kustomization
names the bad release v3, the GitHub stand-in over it, the owner following the branch),
configured for a staging environment (drills allowed) and for prod (refused).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.kubernetes.gitops import RECORD
from bot.config import RollbackConfig, parse_config
from sandbox.forges import Forges
from tests.fakes.config import BOB, CAROL
from tests.fakes.git_deploy import Deploy
from tests.fakes.git_hold import APP, APPSET, PROJECT, ROOT, TOKEN, deploy_repository, git_source
from tests.fakes.git_hold import owned_by as owned
from tests.fakes.gitops import API, NS, image

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

PARENTS = {"applicationset": APPSET, "app-of-apps": ROOT}


def drill_config_dict(kube: KubeCluster, git: dict[str, Any]) -> dict[str, Any]:
    """staging and prod, each with `app`: voxflow-api on the stand-in, its `git:` source."""
    target = {
        "kind": "kubernetes",
        "namespace": NS,
        "deployment": API,
        "connection": {"kubeconfig": str(kube.kubeconfig), "context": "sandbox"},
        "rollout_timeout": 30,
        "recheck_after": 0,
        "git": git,
    }
    env = {
        "incident_channel": "C0STAGING1",
        "approvers": {"users": [BOB, CAROL]},
        "targets": {"app": target},
    }
    return {"environments": {"staging": env, "prod": copy.deepcopy(env)}}


@dataclass
class GitDrill:
    """The world before the drill, and what a test reads of it."""

    kube: KubeCluster
    deploy: Deploy
    forges: Forges
    raw: dict[str, Any]
    owners: list[tuple[str, str, str]]
    """The owner that deploys the workload, its parent first when it has one."""
    before: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def config(self) -> RollbackConfig:
        return parse_config(self.raw, path=Path("drill.yml"))

    def image(self) -> str:
        return image(self.kube)

    def spec(self, key: tuple[str, str, str]) -> dict[str, Any]:
        return copy.deepcopy(self.kube.fake.store.get(*key)["spec"])

    def recorded(self, key: tuple[str, str, str]) -> bool:
        """Whether the owner still carries the bot's suspension record."""
        annotations = self.kube.fake.store.get(*key)["metadata"].get("annotations") or {}
        return RECORD in annotations

    def syncs(self) -> bool:
        """Whether the owner that deploys the workload syncs automatically now."""
        spec = self.spec(self.owners[-1])
        if self.owners[-1] == APP:
            return bool((spec.get("syncPolicy") or {}).get("automated"))
        return not spec.get("suspend")

    def pulls(self) -> list[tuple[int, str, bool]]:
        """(number, state, merged) of every pull request on the deploy repository."""
        return [(p.number, p.state, p.merged) for p in self.forges.repos[PROJECT].pulls]

    def left_behind(self) -> list[str]:
        """What the drill left that was not there before it: empty when it left nothing."""
        left = [f"{branch} branch" for branch in self.deploy.branches() if branch != "main"]
        left += [f"pull request {n} open" for n, state, _ in self.pulls() if state == "open"]
        left += [f"pull request {n} merged" for n, _, merged in self.pulls() if merged]
        for key in self.owners:
            if self.spec(key) != self.before[key]:
                left.append(f"{key} is {self.spec(key)}, was {self.before[key]}")
            if self.recorded(key):
                left.append(f"{key} still carries the suspension record")
        return left


def git_drill(
    kube: KubeCluster,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    tool: str = "applicationset",
    **git: Any,
) -> GitDrill:
    """voxflow-api at v3 (Git's version), deployed by `tool` from the branch; nothing held."""
    monkeypatch.setenv("BOT_GIT_TOKEN", TOKEN)
    deploy = deploy_repository(tmp_path, forges)
    owner = owned(kube, deploy, tool)
    owners = [PARENTS[tool], owner] if tool in PARENTS else [owner]
    raw = drill_config_dict(kube, git_source(deploy, forges) | git)
    world = GitDrill(kube, deploy, forges, raw, owners)
    world.before = {key: world.spec(key) for key in owners}
    return world
