"""Drills of a workload a GitOps owner deploys from a `git:` source: the whole loop, in staging.

Real git (a bare repository), real `kubectl kustomize`, the GitHub API stand-in of
sandbox/forges.py and the Kubernetes stand-in's Argo CD (under an ApplicationSet) and
Flux following the real branch (sandbox/kubernetes/gitsync.py). The drill suspends sync,
rolls back, proposes the change on its own branch, checks the proposal and the hold,
withdraws it, rolls forward, resumes sync as it was and confirms one reconcile; afterwards
nothing is left: no branch, no open pull request, no owner changed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot.application.drills import DrillRecorder, Drills
from bot.application.flows import Flows
from bot.config import RollbackConfig
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.recheck import Rechecks
from bot.execution.runner import Runner
from bot.execution.sync import held_owners
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Run
from bot.persistence.store import StepView, Store
from sandbox.forges import Forges
from tests.fakes.config import ALICE, BOB
from tests.fakes.flows import RecordingThread
from tests.fakes.git_drill import GitDrill, git_drill
from tests.fakes.git_hold import PROJECT
from tests.fakes.gitops import AUTOMATED, IMAGES
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.git_hold"]

ARGO_STEPS = [
    ("drill", "drill.marker"),
    ("prepare", "kubernetes.suspend_sync"),
    ("prepare", "kubernetes.suspend_sync"),
    ("rollback", "kubernetes.rollout_undo"),
    ("verify", "kubernetes.rollout_status"),
    ("verify", "git.propose"),
    ("verify", "kubernetes.drill_hold"),
    ("forward", "git.withdraw"),
    ("forward", "kubernetes.rollout_undo"),
    ("forward", "kubernetes.rollout_status"),
    ("forward", "kubernetes.resume_sync"),
    ("forward", "kubernetes.resume_sync"),
    ("forward", "kubernetes.confirm_reconcile"),
]


def drills_on(store: Store, config: RollbackConfig) -> Drills:
    flows = Flows(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=Planner(),
        thread=RecordingThread(store=store),
    )
    return Drills(flows)


class Watch(NullProgress):
    """Record, when the hold check finished, whether sync was held and the review open;
    with `close_first`, a person closes the drill's pull request just before the check."""

    def __init__(self, world: GitDrill, *, close_first: bool = False) -> None:
        self.world = world
        self.close_first = close_first
        self.at_hold: dict[str, Any] = {}

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        if step["name"] == "kubernetes.drill_hold" and self.close_first:
            self.world.forges.close(PROJECT, 1)

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        if step["name"] == "kubernetes.drill_hold":
            self.at_hold = {
                "syncs": self.world.syncs(),
                "image": self.world.image(),
                "pulls": self.world.pulls(),
                "branches": self.world.deploy.branches(),
                "main": self.world.deploy.show("main", "apps/api/kustomization.yaml"),
            }


def run_drill(world: GitDrill, store: Store, *, close_first: bool = False) -> tuple[Run, Watch]:
    config = world.config
    drills = drills_on(store, config)
    opened = drills.open(environment="staging", target="app", requester=ALICE)
    assert drills.flows.approve(opened.run.id, user=BOB).started
    watch = Watch(world, close_first=close_first)
    planner = Planner()
    runner = Runner(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=planner,
        progress=DrillRecorder(watch, store),
        rechecks=Rechecks(store=store, config=config, planner=planner),
        sleep=lambda _: None,
    )
    assert runner.run_pending() == [opened.run.id]
    run = store.runs.get(opened.run.id)
    assert run is not None
    return run, watch


def test_an_argo_cd_drill_under_an_applicationset_runs_the_loop_and_leaves_nothing_behind(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(kube, forges, tmp_path, monkeypatch, tool="applicationset")
    main = world.deploy.head("main")

    run, watch = run_drill(world, store)

    assert run.state == "succeeded", run.outcome
    assert [(s["phase"], s["name"]) for s in run.plan] == ARGO_STEPS
    said = run.plan[5]["description"]
    assert "a pull request from drill/<incident> into main (github) that is never merged" in said
    assert [s["always"] for s in run.plan[7:]] == [True, False, False, True, True, False]
    # While the review was open the hold held: sync suspended, the rollback in place.
    incident = run.incident_id.lower()
    assert watch.at_hold == {
        "syncs": False,
        "image": IMAGES[1],
        "pulls": [(1, "open", False)],
        "branches": sorted(["main", f"drill/{incident}"]),
        "main": world.deploy.show("main", "apps/api/kustomization.yaml"),
    }
    steps = {s.position: s for s in store.steps.of(run.id)}
    assert f"https://github.com/{PROJECT}/pull/1 is open, not merged" in steps[6].summary
    assert "Argo CD ApplicationSet apps in argocd still held" in steps[6].summary
    assert "Argo CD application voxflow in argocd still held" in steps[6].summary
    assert steps[7].summary == (
        f"closed https://github.com/{PROJECT}/pull/1 unmerged; deleted the branch drill/{incident}"
    )
    assert steps[12].summary.startswith("Argo CD application voxflow in argocd reconciled at")
    assert f"still runs {IMAGES[2]}" in steps[12].summary
    # Nothing left: main as it was, the pull request closed unmerged, sync as recorded.
    assert world.deploy.head("main") == main
    assert world.left_behind() == []
    assert world.pulls() == [(1, "closed", False)]
    assert world.spec(world.owners[-1])["syncPolicy"]["automated"] == AUTOMATED
    assert world.image() == IMAGES[2]
    assert held_owners(run) == []
    assert [r.step for r in store.rechecks.of(run.id)] == []  # no hold after a drill
    drill = store.drills.get(run.id)
    assert drill is not None and drill.state == "succeeded"
    assert drill.recover_seconds is not None and drill.forward_seconds is not None
    assert [(s["name"], s["part"]) for s in drill.steps][5:8] == [
        ("git.propose", "rollback"),
        ("kubernetes.drill_hold", "rollback"),
        ("git.withdraw", "forward"),
    ]
    assert all(s["seconds"] is not None for s in drill.steps)
    assert [s["label"] for s in drill.steps][6:8] == [
        "Check the drill's Git change and the hold on deployment/voxflow-api",
        "Withdraw the drill's Git change for deployment/voxflow-api",
    ]


def test_a_flux_drill_commits_on_its_own_branch_never_on_main_and_leaves_nothing_behind(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(
        kube,
        forges,
        tmp_path,
        monkeypatch,
        tool="flux-kustomization",
        change="commit",
        provider=None,
    )
    main = world.deploy.head("main")

    run, watch = run_drill(world, store)

    assert run.state == "succeeded", run.outcome
    names = [s["name"] for s in run.plan]
    assert names.count("kubernetes.suspend_sync") == 1 and names[-1] == (
        "kubernetes.confirm_reconcile"
    )
    assert watch.at_hold["syncs"] is False and watch.at_hold["image"] == IMAGES[1]
    assert watch.at_hold["pulls"] == []  # a commit on the drill's branch, no review
    assert watch.at_hold["branches"] == sorted(["main", f"drill/{run.incident_id.lower()}"])
    assert world.deploy.head("main") == main
    assert world.left_behind() == []
    assert world.image() == IMAGES[2]
    status = kube.fake.store.get(*world.owners[-1])["status"]
    assert status["lastAppliedRevision"] == f"main@sha1:{main}"


def test_production_refuses_a_gitops_drill_and_touches_nothing(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(kube, forges, tmp_path, monkeypatch, tool="applicationset")
    drills = drills_on(store, world.config)
    with pytest.raises(Refused, match="drills are not allowed in prod"):
        drills.open(environment="prod", target="app", requester=ALICE)
    assert store.runs.find() == [] and store.drills.find() == []
    assert world.left_behind() == [] and world.pulls() == [] and world.syncs()
    assert world.image() == IMAGES[2]


def test_a_drill_whose_pull_request_a_person_closed_fails_and_still_leaves_nothing_behind(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(kube, forges, tmp_path, monkeypatch, tool="applicationset")

    run, _ = run_drill(world, store, close_first=True)

    assert run.state == "failed"
    assert "the drill's loop does not hold: no review is open for drill/" in run.outcome
    ran = {s.name: s.state for s in store.steps.of(run.id)}
    assert ran["git.withdraw"] == "succeeded" and ran["kubernetes.resume_sync"] == "succeeded"
    assert "kubernetes.confirm_reconcile" not in ran  # not an always step
    assert world.left_behind() == [] and world.syncs()
    # Resumed, Argo CD puts back what Git names: the version that ran before the drill.
    wait_for(lambda: world.image() == IMAGES[2], what="Argo CD to put Git's version back")
    assert held_owners(run) == []


def test_a_drill_with_a_gitlab_merge_request_closes_it_unmerged(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(
        kube,
        forges,
        tmp_path,
        monkeypatch,
        tool="argocd",
        provider="gitlab",
        api_url=f"{forges.url}/api/v4",
    )

    run, watch = run_drill(world, store)

    assert run.state == "succeeded", run.outcome
    assert watch.at_hold["pulls"] == [(1, "open", False)] and watch.at_hold["syncs"] is False
    (withdrawn,) = [s for s in store.steps.of(run.id) if s.name == "git.withdraw"]
    assert withdrawn.summary.startswith(
        f"closed https://gitlab.com/{PROJECT}/-/merge_requests/1 unmerged"
    )
    assert world.left_behind() == [] and world.pulls() == [(1, "closed", False)]
    assert world.image() == IMAGES[2] and world.syncs()


def test_a_flux_kustomization_suspended_before_the_drill_stays_suspended(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(
        kube,
        forges,
        tmp_path,
        monkeypatch,
        tool="flux-kustomization",
        change="commit",
        provider=None,
    )
    owner = copy.deepcopy(kube.fake.store.get(*world.owners[-1]))
    owner["spec"]["suspend"] = True
    kube.fake.store.update("kustomizations", owner, check_version=False)
    world.before = {key: world.spec(key) for key in world.owners}

    run, _ = run_drill(world, store)

    assert run.state == "succeeded", run.outcome
    steps = {s.name: s for s in store.steps.of(run.id)}
    assert steps["kubernetes.suspend_sync"].state == "skipped"
    assert steps["kubernetes.confirm_reconcile"].state == "skipped"
    assert world.left_behind() == [] and not world.syncs()  # suspended, as it was
    assert world.image() == IMAGES[2]


def test_a_gitops_drill_without_a_git_source_resumes_the_sync_it_suspended(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = git_drill(kube, forges, tmp_path, monkeypatch, tool="argocd")
    del world.raw["environments"]["staging"]["targets"]["app"]["git"]

    run, _ = run_drill(world, store)

    assert run.state == "succeeded", run.outcome
    assert [s["name"] for s in run.plan][-1] == "kubernetes.resume_sync"
    assert not any(s["name"].startswith("git.") for s in run.plan)
    assert world.left_behind() == [] and world.syncs() and world.pulls() == []
    assert world.image() == IMAGES[2] and held_owners(run) == []
