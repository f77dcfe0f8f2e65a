"""A GitOps drill killed at any step (SIGKILL, in a child process) is finished by another
runner, and still leaves nothing behind: no branch, no open pull request, no suspended
sync, no parent held, the workload at the version it ran before the drill.

The world of tests/fakes/git_drill.py: Argo CD under an ApplicationSet (or a Flux
Kustomization) following a real branch, the GitHub stand-in, the Kubernetes stand-in; each
step killed where its work is done but not recorded (`returned`), the hardest point to
resume from, and (Argo CD) where it has started but done nothing (`started`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bot.execution.sync import held_owners
from sandbox.forges import Forges
from tests.fakes.crash import CrashCase, CrashChildren
from tests.fakes.git_drill import git_drill
from tests.fakes.gitops import IMAGES

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.git_hold", "tests.fakes.crash"]

STEPS = {"applicationset": 13, "flux-kustomization": 11}
"""The drill's steps: marker, the suspends (Argo CD: the ApplicationSet's and the
application's), undo, status, proposal, hold check, withdrawal, undo, status, the resumes,
reconcile (tests/bot/test_drill_gitops.py lists them)."""
KILLS = [
    ("applicationset", kind, position)
    for position in range(STEPS["applicationset"])
    for kind in ("returned", "started")
] + [("flux-kustomization", "returned", p) for p in range(STEPS["flux-kustomization"])]


@pytest.mark.parametrize(("tool", "kind", "position"), KILLS, ids=lambda v: str(v))
def test_a_gitops_drill_killed_at_any_step_resumes_and_leaves_nothing_behind(
    tool: str,
    kind: str,
    position: int,
    kube: KubeCluster,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crash_children: CrashChildren,
) -> None:
    world = git_drill(kube, forges, tmp_path, monkeypatch, tool=tool)
    main = world.deploy.head("main")
    case = CrashCase(config=world.raw, environment="staging", drill=True)

    store, final = crash_children.crash_and_resume(
        url=f"sqlite:///{tmp_path / 'bot.db'}",
        case=case,
        case_file=tmp_path / "case.json",
        kill=(kind, position),
    )

    assert len(final.plan) == STEPS[tool], [s["name"] for s in final.plan]
    assert final.state == "succeeded", final.outcome
    assert world.left_behind() == []
    assert world.deploy.head("main") == main
    assert world.pulls() == [(1, "closed", False)]  # one pull request, opened once, closed
    assert world.image() == IMAGES[2] and world.syncs()
    assert held_owners(final) == []
    (reconciled,) = [
        s for s in store.steps.of(final.id) if s.name == "kubernetes.confirm_reconcile"
    ]
    assert f"still runs {IMAGES[2]}" in reconciled.summary
