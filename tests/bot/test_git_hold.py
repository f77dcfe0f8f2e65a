"""The hold after a rollback whose Git change the bot proposed, on SQLite and PostgreSQL.

Real git (a bare repository, the pull request merged with a real `git merge`), real
`kubectl kustomize`, the GitHub API stand-in of sandbox/forges.py, and the Kubernetes
stand-in's Argo CD and Flux following the real branch (sandbox/kubernetes/gitsync.py).
The hold polls on the store's clock, which the tests move by hand; a fresh `Rechecks` on
the same database stands for another (or a restarted) bot process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from bot.execution.recheck import Rechecks
from bot.execution.sync import BY_THE_BOT, SyncResumes, held_owners
from bot.persistence.store import Store, make_engine
from sandbox.forges import Forges
from tests.fakes.config import Clock, config_dict
from tests.fakes.git_hold import (
    APPSET,
    PROJECT,
    ROOT,
    TOKEN,
    Held,
    held_world,
    resume,
    set_tag,
    settle_reconcile,
)
from tests.fakes.gitops import AUTOMATED, IMAGES

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.git_hold"]


@pytest.fixture
def held(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Held:
    return held_world(kube, store, forges, tmp_path, monkeypatch)


def test_the_hold_waits_while_the_pull_request_is_open(held: Held, clock: Clock) -> None:
    assert held.process().run_due() == 0
    row = held.hold()
    assert row.state == "pending" and row.spec["phase"] == "holding"
    assert row.outcome == f"https://github.com/{PROJECT}/pull/1 is not merged yet"
    assert row.spec["since"] == held.deploy.head("main")
    assert (row.due_at - clock.now).total_seconds() == 60
    clock.advance(seconds=30)
    assert held.process().run_due() == 0 and held.hold().outcome == row.outcome
    assert held.said() == [] and not held.syncs()


def test_a_merged_change_resumes_sync_and_one_reconcile_leaves_the_rollback_in_place(
    held: Held, clock: Clock
) -> None:
    held.process().run_due()
    merged = held.forges.merge(PROJECT, 1)
    assert merged is not None
    clock.advance(minutes=1)
    resume(held, clock)  # Argo CD compared Git with live first; now the reconcile is to be seen
    row = held.hold()
    assert row.spec["revision"] == merged
    app = held.kube.fake.store.get("applications", "argocd", "voxflow")
    assert app["spec"]["syncPolicy"]["automated"] == AUTOMATED
    (resumed,) = held.resumed()
    assert resumed["by"] == BY_THE_BOT and resumed["ok"]
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    assert held.hold().state == "done"
    assert held.image() == IMAGES[1]
    (confirmed,) = held.said()
    assert confirmed["event"] == "confirmed" and not confirmed["loud"]
    assert confirmed["lines"] == [
        f"Argo CD application voxflow in argocd reconciled at {merged[:12]}: "
        f"deployment/voxflow-api still runs {IMAGES[1]}; nothing changed"
    ]
    assert confirmed["review_url"] == f"https://github.com/{PROJECT}/pull/1"
    status = held.kube.fake.store.get("applications", "argocd", "voxflow")["status"]
    assert status["sync"] == {"status": "Synced", "revision": merged}
    clock.advance(minutes=5)
    assert held.process().run_due() == 0 and len(held.said()) == 1


def test_a_pull_request_closed_unmerged_is_said_once_and_the_hold_stays(
    held: Held, clock: Clock
) -> None:
    held.process().run_due()
    held.forges.close(PROJECT, 1)
    clock.advance(minutes=1)
    assert held.process().run_due() == 0
    (closed,) = held.said()
    assert closed["event"] == "closed" and closed["loud"]
    assert closed["lines"] == [
        f"https://github.com/{PROJECT}/pull/1 was closed without being merged"
    ]
    assert closed["held"] == f"https://github.com/{PROJECT}/pull/1 is closed unmerged"
    for _ in range(3):
        clock.advance(minutes=1)
        assert held.process().run_due() == 0
    assert len(held.said()) == 1  # once per event, not every poll
    assert held.hold().state == "pending" and not held.syncs()
    assert held.image() == IMAGES[1] and held.resumed() == []


def test_a_conflicting_pull_request_is_said_once_and_the_hold_stays(
    held: Held, clock: Clock
) -> None:
    held.process().run_due()
    set_tag(held.deploy, "v3-hotfix", "hotfix on top of v3")  # the line the change edits
    clock.advance(minutes=1)
    assert held.process().run_due() == 0
    clock.advance(minutes=1)
    assert held.process().run_due() == 0
    (conflict,) = held.said()
    assert conflict["event"] == "conflict" and conflict["lines"] == [
        f"https://github.com/{PROJECT}/pull/1 conflicts with its base: not mergeable"
    ]
    assert held.forges.merge(PROJECT, 1) is None  # the stand-in refuses the merge too
    assert not held.syncs() and held.image() == IMAGES[1]


def test_a_commit_naming_the_bad_version_again_is_said_and_the_hold_stays_until_fixed(
    held: Held, clock: Clock
) -> None:
    held.process().run_due()
    assert held.forges.merge(PROJECT, 1) is not None
    again = set_tag(held.deploy, "v3", "release v3 again")
    clock.advance(minutes=1)
    assert held.process().run_due() == 0
    (bad,) = held.said()
    assert bad["event"] == "bad" and bad["lines"] == [
        f"commit {again[:12]} (release v3 again) names the bad version again"
    ]
    assert bad["held"] == f"Git names voxflow/api:v3, production runs {IMAGES[1]}"
    clock.advance(minutes=1)
    assert held.process().run_due() == 0 and len(held.said()) == 1
    assert not held.syncs() and held.image() == IMAGES[1]
    # Someone fixes Git again: the hold resumes, and the reconcile changes nothing.
    fixed = set_tag(held.deploy, "v2", "back to v2")
    clock.advance(minutes=1)
    resume(held, clock)
    assert held.hold().spec["revision"] == fixed
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    assert [d["event"] for d in held.said()] == ["bad", "confirmed"]
    assert held.image() == IMAGES[1]


def test_a_bot_restarted_during_the_hold_completes_it(
    held: Held, clock: Clock, database_url: str
) -> None:
    held.process().run_due()
    # The bot is killed; a new process starts on the same database, with nothing in memory.
    engine = make_engine(database_url)
    try:
        restarted = Store(engine, clock=clock)
        merged = held.forges.merge(PROJECT, 1)
        clock.advance(minutes=1)
        resume(held, clock, restarted)
        assert held.hold(restarted).spec["revision"] == merged
        settle_reconcile(held)
        clock.advance(seconds=5)
        assert held.process(restarted).run_due() == 1
        assert [d["event"] for d in held.said(restarted)] == ["confirmed"]
    finally:
        engine.dispose()
    assert held.image() == IMAGES[1] and held.syncs()


def test_a_bot_killed_between_resuming_and_recording_it_carries_on_with_the_reconcile(
    held: Held, clock: Clock
) -> None:
    held.process().run_due()
    assert held.forges.merge(PROJECT, 1) is not None
    clock.advance(minutes=1)
    # The poll claimed the hold and resumed the sync, then died before recording it.
    claimed = held.store.rechecks.claim_next(owner="killed", seconds=120)
    assert claimed is not None and claimed.step == "git.hold"
    run = held.store.runs.get(held.run.id)
    assert run is not None
    SyncResumes(held.store, held.config, Planner()).resume(run, held_owners(run), by=BY_THE_BOT)
    assert held.syncs()
    clock.advance(minutes=3)  # its claim (two minutes) runs out
    assert held.process().run_due() == 0
    assert held.hold().spec["phase"] == "reconciling", (held.hold().outcome, held.image())
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    assert [d["event"] for d in held.said()] == ["confirmed"]
    assert len(held.resumed()) == 1  # resumed once


def test_an_approver_pressing_resume_sync_ends_the_hold(held: Held, clock: Clock) -> None:
    held.process().run_due()
    run = held.store.runs.get(held.run.id)
    assert run is not None
    SyncResumes(held.store, held.config, Planner()).resume(run, held_owners(run), by="U0BOB00002")
    clock.advance(minutes=1)
    assert held.process().run_due() == 1
    assert held.hold().state == "done"
    assert held.hold().outcome == "the sync was resumed by U0BOB00002"
    assert held.said() == []


def test_a_flux_kustomization_is_held_until_merged_then_reconciles_once(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    held = held_world(kube, store, forges, tmp_path, monkeypatch, tool="flux-kustomization")
    held.process().run_due()
    merged = held.forges.merge(PROJECT, 1)
    assert merged is not None
    clock.advance(minutes=1)
    resume(held, clock)
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    (confirmed,) = held.said()
    assert confirmed["lines"] == [
        f"Flux kustomization apps in flux-system reconciled at {merged[:12]}: "
        f"deployment/voxflow-api still runs {IMAGES[1]}; nothing changed"
    ]
    status = kube.fake.store.get("kustomizations", "flux-system", "apps")["status"]
    assert status["lastAppliedRevision"] == f"main@sha1:{merged}"
    assert held.image() == IMAGES[1]


@pytest.mark.parametrize("parent", ["applicationset", "app-of-apps"])
def test_a_parent_stays_held_with_the_application_and_is_released_with_it(
    parent: str,
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    held = held_world(kube, store, forges, tmp_path, monkeypatch, tool=parent)
    parent_key = APPSET if parent == "applicationset" else ROOT
    assert [o.name for o in held_owners(held.run)] == [parent_key[2], "voxflow"]

    def parent_holds() -> bool:
        found = kube.fake.store.get(*parent_key)["spec"]
        if parent == "applicationset":
            return bool(found.get("ignoreApplicationDifferences"))
        return "automated" not in (found.get("syncPolicy") or {})

    held.process().run_due()
    assert parent_holds() and not held.syncs()
    merged = held.forges.merge(PROJECT, 1)
    clock.advance(minutes=1)
    resume(held, clock)
    assert not parent_holds()
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    (confirmed,) = held.said()
    assert confirmed["event"] == "confirmed" and merged is not None
    assert held.image() == IMAGES[1] and held.syncs()  # the parent left the child's sync on


def test_git_that_cannot_be_read_is_said_once_and_the_hold_polls_on(
    held: Held, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_GIT_TOKEN", "a-revoked-token")
    for _ in range(2):
        assert held.process().run_due() == 0
        clock.advance(minutes=1)
    (unreadable,) = held.said()
    assert unreadable["event"] == "unreadable" and unreadable["loud"]
    assert "the token was refused (401)" in unreadable["lines"][0]
    assert "a-revoked-token" not in str(unreadable)
    assert held.hold().state == "pending" and not held.syncs()
    monkeypatch.setenv("BOT_GIT_TOKEN", TOKEN)
    held.forges.merge(PROJECT, 1)
    resume(held, clock)
    assert [d["event"] for d in held.said()] == ["unreadable"]


def test_a_target_that_left_the_config_ends_the_hold_loudly_and_changes_nothing(
    held: Held, clock: Clock
) -> None:
    raw = config_dict()
    targets = raw["environments"]["prod"]["targets"]
    del targets["app"], targets["full"]
    config = parse_config(raw, path=Path("test.yml"))
    held.forges.merge(PROJECT, 1)
    assert Rechecks(store=held.store, config=config, planner=Planner()).run_due() == 1
    (dropped,) = held.said()
    assert dropped["event"] == "dropped" and dropped["lines"] == [
        "the hold ends: app is no longer a Kubernetes target in prod; the sync stays "
        "suspended until Resume sync"
    ]
    assert held.hold().state == "dropped"
    assert not held.syncs() and held.image() == IMAGES[1] and held.resumed() == []


def test_a_bot_killed_in_the_middle_of_resuming_is_taken_over_and_the_hold_completes(
    held: Held, clock: Clock
) -> None:
    held.process().run_due()
    held.forges.merge(PROJECT, 1)
    # A poll began resuming (its record says so) and died before the cluster was called.
    assert held.store.resumes.begin(held.run.id, by=BY_THE_BOT) is None
    clock.advance(minutes=1)
    assert held.process().run_due() == 0  # Argo CD is asked to compare
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 0  # the dead attempt is recorded as failed
    assert held.hold().outcome.startswith("a bot process stopped while resuming")
    assert not held.syncs()
    clock.advance(seconds=5)
    assert held.process().run_due() == 0
    assert held.hold().spec["phase"] == "reconciling" and held.syncs()
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    assert [d["ok"] for d in held.resumed()] == [False, True]
    assert [d["event"] for d in held.said()] == ["confirmed"]


def test_a_direct_commit_on_the_branch_ends_the_hold_at_the_first_poll(
    kube: KubeCluster,
    store: Store,
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    held = held_world(kube, store, forges, tmp_path, monkeypatch, change="commit", provider=None)
    committed = held.deploy.head("main")
    assert held.deploy.show("main", "apps/api/kustomization.yaml").count("newTag: v2") == 1
    resume(held, clock)
    assert held.hold().spec["revision"] == committed
    settle_reconcile(held)
    clock.advance(seconds=5)
    assert held.process().run_due() == 1
    (confirmed,) = held.said()
    assert confirmed["review_url"] is None and confirmed["commit"] == committed
    assert held.image() == IMAGES[1]
