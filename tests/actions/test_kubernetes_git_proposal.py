"""A Kubernetes rollback whose workload Git names proposes, once verified, the change that makes
Git name what production runs; before approval the plan says where, and whether the token may.

The stand-in API server runs the Deployment; real git serves the deploy repository; the
GitHub API is the stand-in of sandbox/forges.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import Level, StepContext, spec_of
from actions.git.params import GitSource
from actions.git.step import ProposeGitChange
from actions.kubernetes import KubernetesParams, KubernetesTarget
from sandbox.forges import Forges
from tests.fakes.git_deploy import Deploy, run

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS, API = "voxflow-prod", "voxflow-api"
IMAGES = ["voxflow/api:v1", "voxflow/api:v2", "voxflow/api:v3"]
TOKEN = "ghp_bot_token_for_the_deploy_repo"
MANIFEST = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {API}
spec:
  template:
    spec:
      containers:
        - name: api
          image: voxflow/api:v3   # the bad release
"""


@pytest.fixture
def forges() -> Iterator[Forges]:
    served = Forges().start()
    served.grant(TOKEN)
    served.grant("read-only", push=False)
    try:
        yield served
    finally:
        served.stop()


def target(kube: KubeCluster, deploy: Deploy, forges: Forges, token: str = "BOT_GIT_TOKEN") -> Any:
    git = GitSource(
        repository=deploy.url,
        path="apps/api",
        provider="github",
        project="voxflow/deploy",
        api_url=forges.url,
        token={"env": token},
    )
    params = KubernetesParams(
        kind="kubernetes", namespace=NS, deployment=API, connection=kube.connection, git=git
    )
    return KubernetesTarget(params)


def test_the_plan_names_the_change_and_running_it_opens_the_pull_request(
    kube: KubeCluster, forges: Forges, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_GIT_TOKEN", TOKEN)
    kube.fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    deploy = Deploy(tmp_path, {"apps/api/deployment.yaml": MANIFEST})
    forges.add("voxflow/deploy", deploy.bare)
    plan = target(kube, deploy, forges).plan(None)
    (step,) = [s for s in plan.verify if s.name == "git.propose"]
    assert step.describe() == (
        f"After the rollback is verified, make Git name what deployment/{API} runs: edit "
        f"apps/api in {deploy.url} (voxflow/api v3 → v2), as a pull request into main (github)"
    )
    assert plan.verify.index(step) == len(plan.verify) - 1  # after the rollout is confirmed
    findings = target(kube, deploy, forges).evidence(None)
    assert any(
        f.level is Level.OK and f.text.startswith("the token may push to voxflow/deploy")
        for f in findings
    )
    ctx = StepContext.for_test(timeout=60.0, incident_id="INC-20261207-120000")
    for action in plan.prepare + plan.rollback + plan.verify:
        result = action.run(ctx)
    assert result.summary == (
        "changed apps/api/deployment.yaml:10; review: https://github.com/voxflow/deploy/pull/1"
    )
    assert result.data["review_url"] == "https://github.com/voxflow/deploy/pull/1"
    shown = run(
        "git", "show", "rollback/inc-20261207-120000:apps/api/deployment.yaml", cwd=deploy.bare
    )
    assert shown == MANIFEST.replace("voxflow/api:v3", "voxflow/api:v2")
    # The stored spec holds the token's reference, never its value, and rebuilds the same step.
    spec = spec_of(step)
    assert TOKEN not in str(spec) and spec["source"]["token"] == {
        "env": "BOT_GIT_TOKEN",
        "file": None,
    }
    rebuilt = target(kube, deploy, forges).restore("git.propose", spec)
    assert isinstance(rebuilt, ProposeGitChange) and rebuilt.describe() == step.describe()


def test_a_token_that_cannot_push_is_risky_before_approval(
    kube: KubeCluster, forges: Forges, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READ_ONLY_TOKEN", "read-only")
    kube.fake.add_deployment(NS, API, images=IMAGES, replicas=2)
    deploy = Deploy(tmp_path, {"apps/api/deployment.yaml": MANIFEST})
    forges.add("voxflow/deploy", deploy.bare)
    findings = target(kube, deploy, forges, token="READ_ONLY_TOKEN").evidence(None)
    (risky,) = [f for f in findings if "voxflow/deploy" in f.text]
    assert risky.level is Level.RISKY
    assert risky.text == (
        "the token cannot push to voxflow/deploy: grant it contents and pull request write "
        "there, or the Git change will not be proposed"
    )
