"""The hold in the thread, end to end: the served app, the stand-in cluster's Argo CD following
a real branch, the GitHub stand-in, real git and `kubectl kustomize`.

alice requests the rollback of voxflow-api, bob approves; the bot suspends Argo CD, rolls
back and opens the pull request. Closing it is said loudly, once; merging a second one is
followed by the bot resuming the sync by itself and saying that one reconcile changed
nothing. Hold polls are a minute apart: the tests make the hold's row due instead; its polls for a
reconcile and the passes over due re-checks, seconds apart, are a tenth of a second here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import update

from bot.config import parse_config
from bot.execution import hold
from bot.execution.planner import Planner
from bot.persistence.models import Recheck
from bot.persistence.store import Store
from sandbox.forges import Forges
from sandbox.harness import Sandbox
from sandbox.slack import Message
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE, PEOPLE, config_dict
from tests.fakes.git_deploy import Deploy
from tests.fakes.git_hold import PROJECT, deploy_repository, git_source, owned_by
from tests.fakes.gitops import API, AUTOMATED, IMAGES, NS, image
from tests.fakes.thread import request_rollback, text_of
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.git_hold"]


@pytest.fixture
def served(
    kube: KubeCluster, forges: Forges, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Sandbox, Deploy]]:
    monkeypatch.setenv("BOT_GIT_TOKEN", "ghp_the_bots_token_for_voxflow_deploy")
    # Once Git is merged, the hold polls every few seconds for the owner's reconcile.
    monkeypatch.setattr(hold, "RECONCILE_POLL_SECONDS", 0.1)
    deploy = deploy_repository(tmp_path, forges)
    owned_by(kube, deploy, "argocd")
    raw = config_dict()
    raw["environments"]["prod"]["targets"] = {
        "app": {
            "kind": "kubernetes",
            "namespace": NS,
            "deployment": API,
            "connection": {"kubeconfig": str(kube.kubeconfig), "context": "sandbox"},
            "rollout_timeout": 30,
            "recheck_after": 0,
            "git": git_source(deploy, forges),
        }
    }
    (tmp_path / "bot").mkdir()
    sandbox = Sandbox(
        config=parse_config(raw, path=Path("test.yml")),
        workdir=tmp_path / "bot",
        people=PEOPLE,
        planner=Planner(),
        groups={"SDBAS00001": [DAVE]},
        runner_poll_seconds=0.1,
        recheck_every=0.1,
    ).start()
    yield sandbox, deploy
    sandbox.stop()


def said(sandbox: Sandbox, words: str) -> Message | None:
    return next((m for m in sandbox.slack.messages(CHANNEL) if words in text_of(m)), None)


def poll_now(sandbox: Sandbox) -> None:
    """Make the hold due now (its next poll is a minute away) and wake the runner's loop."""
    store: Store = sandbox.process.store
    with store.session() as session:
        session.execute(
            update(Recheck).where(Recheck.step == "git.hold").values(due_at=store.clock())
        )
    sandbox.process.deps.wake_runner.set()


def rolled_back(sandbox: Sandbox, kube: KubeCluster) -> Store:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run").status_code == 200
    store: Store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state in ("succeeded", "failed"), what="the rollback")
    assert store.runs.find()[0].state == "succeeded", store.runs.find()[0].outcome
    assert image(kube) == IMAGES[1]
    wait_for(
        lambda: any(r.spec.get("since") for r in store.rechecks.of(store.runs.find()[0].id)),
        what="the hold's first poll",
    )
    return store


def test_a_closed_pull_request_is_said_loudly_once_and_sync_stays_held(
    served: tuple[Sandbox, Deploy], kube: KubeCluster, forges: Forges
) -> None:
    sandbox, _ = served
    rolled_back(sandbox, kube)
    held = wait_for(lambda: said(sandbox, "GitOps sync suspended"), what="the held message")
    assert "The bot resumes it by itself once its Git change is merged" in text_of(held)
    forges.close(PROJECT, 1)
    poll_now(sandbox)
    alert = wait_for(
        lambda: said(sandbox, "closed without being merged"), what="the closed pull request said"
    )
    text = text_of(alert)
    assert alert.reply_broadcast and alert.thread_ts is not None
    assert f"https://github.com/{PROJECT}/pull/1 was closed without being merged" in text
    assert f"<@{ALICE}>" in text and f"<@{BOB}>" in text
    assert "GitOps sync stays suspended" in text
    poll_now(sandbox)
    store: Store = sandbox.process.store
    run_id = store.runs.find()[0].id
    wait_for(
        lambda: (
            next(r for r in store.rechecks.of(run_id) if r.step == "git.hold").due_at
            > store.clock()
        ),
        what="the next poll",
    )
    closed = [m for m in sandbox.slack.messages(CHANNEL) if "closed without" in text_of(m)]
    assert len(closed) == 1
    app = kube.fake.store.get("applications", "argocd", "voxflow")
    assert "automated" not in (app["spec"].get("syncPolicy") or {})


def test_a_merged_pull_request_brings_sync_back_and_the_thread_says_nothing_changed(
    served: tuple[Sandbox, Deploy], kube: KubeCluster, forges: Forges
) -> None:
    sandbox, _ = served
    rolled_back(sandbox, kube)
    merged = forges.merge(PROJECT, 1)
    assert merged is not None
    poll_now(sandbox)
    wait_for(
        lambda: (
            kube.fake.store.get("applications", "argocd", "voxflow")["spec"]["syncPolicy"].get(
                "automated"
            )
            == AUTOMATED
        ),
        timeout=60,
        what="the bot to resume Argo CD's automated sync",
    )
    resumed = wait_for(lambda: said(sandbox, "resumed the GitOps sync"), what="the resume said")
    assert text_of(resumed).startswith(":arrow_forward: the bot resumed the GitOps sync")
    done = wait_for(
        lambda: said(sandbox, "watched one reconcile"), timeout=60, what="the hold's last line"
    )
    text = text_of(done)
    assert "Git names voxflow/api:v2" in text
    assert f"reconciled at {merged[:12]}" in text and "nothing changed" in text
    assert not done.reply_broadcast
    assert image(kube) == IMAGES[1]
