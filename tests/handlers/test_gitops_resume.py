"""Resume sync, end to end: signed clicks on the served app, the stand-in cluster as Argo CD.

alice requests the rollback of voxflow-api, whose Argo CD application self-heals; bob
approves; the bot suspends the application's automated sync, rolls back and leaves it
suspended, and says in the thread (and the RCA) what to revert in Git, with Resume sync.
Only approvers of prod may press it; the first press resumes it once; a later press is
told who did it and when, and the cluster is not called again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import update

from bot.config import parse_config
from bot.execution.planner import Planner
from bot.persistence.models import Recheck
from sandbox.harness import Sandbox
from sandbox.slack import Message
from tests.fakes.config import ALICE, BOB, CAROL, CHANNEL, DAVE, MALLORY, PEOPLE, config_dict
from tests.fakes.gitops import (
    API,
    APP,
    AUTOMATED,
    IMAGES,
    NS,
    argocd,
    flux,
    image,
)
from tests.fakes.thread import request_rollback, text_of
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]
RESUME = "resume_sync"


def serve(kube: KubeCluster, tmp_path: Path) -> Sandbox:
    raw = config_dict()
    raw["environments"]["prod"]["targets"] = {
        "app": {
            "kind": "kubernetes",
            "namespace": NS,
            "deployment": API,
            "connection": {"kubeconfig": str(kube.kubeconfig), "context": "sandbox"},
            "rollout_timeout": 30,
        }
    }
    return Sandbox(
        config=parse_config(raw, path=Path("test.yml")),
        workdir=tmp_path,
        people=PEOPLE,
        planner=Planner(),
        groups={"SDBAS00001": [DAVE]},
        runner_poll_seconds=0.1,
    ).start()


@pytest.fixture
def gitops_sandbox(kube: KubeCluster, tmp_path: Path) -> Iterator[Sandbox]:
    argocd(kube)
    sandbox = serve(kube, tmp_path)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def flux_sandbox(kube: KubeCluster, tmp_path: Path) -> Iterator[tuple[Sandbox, Any]]:
    owner = flux(kube)
    sandbox = serve(kube, tmp_path)
    yield sandbox, owner
    sandbox.stop()


def held_message(sandbox: Sandbox) -> Message | None:
    return next(
        (m for m in sandbox.slack.messages(CHANNEL) if "GitOps sync stays suspended" in m.text),
        None,
    )


def has_button(message: Message) -> bool:
    return any(
        e.get("action_id") == RESUME for b in message.blocks for e in b.get("elements") or []
    )


def application_patches(kube: KubeCluster) -> int:
    path = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/voxflow"
    return sum(1 for r in kube.fake.api.writes if r.method == "PATCH" and r.path == path)


def automated(kube: KubeCluster) -> Any:
    return kube.fake.store.get(*APP)["spec"].get("syncPolicy", {}).get("automated")


def rolled_back(sandbox: Sandbox, kube: KubeCluster, *, argo: bool = True) -> Message:
    """Request, approve, wait for the success and the held-sync message."""
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run").status_code == 200
    store = sandbox.process.store
    wait_for(
        lambda: store.runs.find()[0].state in ("succeeded", "failed"), what="the rollback to finish"
    )
    run = store.runs.find()[0]
    assert run.state == "succeeded", run.outcome
    assert image(kube) == IMAGES[1] and (not argo or automated(kube) is None)
    return wait_for(lambda: held_message(sandbox), what="the held-sync message")


def test_the_thread_and_the_rca_say_what_to_revert_in_git_with_resume_sync(
    gitops_sandbox: Sandbox, kube: KubeCluster
) -> None:
    held = rolled_back(gitops_sandbox, kube)
    said = text_of(held)
    assert "Argo CD application voxflow in argocd stays suspended" in said
    assert f"set deployment/{API} back to {IMAGES[1]} in Git first" in said
    assert has_button(held) and held.thread_ts is not None
    assert "<@UBOB000001>" in said and "<!subteam^SDBAS00001>" in said  # who may press it
    rca = wait_for(lambda: gitops_sandbox.slack.files(), what="the RCA")[0].text
    assert "**GitOps**: Argo CD application voxflow in argocd stays suspended" in rca


def test_only_approvers_may_resume_and_a_refusal_changes_nothing(
    gitops_sandbox: Sandbox, kube: KubeCluster
) -> None:
    held = rolled_back(gitops_sandbox, kube)
    before = application_patches(kube)
    for outsider in (ALICE, MALLORY):  # the requester is not an approver here either
        person = gitops_sandbox.person(outsider)
        assert person.click(CHANNEL, held.ts, RESUME).status_code == 200
        wait_for(
            lambda u=outsider: any(
                e.user == u and "Only approvers of prod may resume the sync" in e.text
                for e in gitops_sandbox.slack.ephemerals(CHANNEL)
            ),
            what="the refusal",
        )
    assert application_patches(kube) == before and automated(kube) is None
    assert (
        gitops_sandbox.process.store.resumes.get(gitops_sandbox.process.store.runs.find()[0].id)
        is None
    )


def test_an_approver_resumes_once_and_a_second_press_is_told_who_did_it(
    gitops_sandbox: Sandbox, kube: KubeCluster
) -> None:
    held = rolled_back(gitops_sandbox, kube)
    stale = gitops_sandbox.person(DAVE).click_payload(CHANNEL, held.ts, RESUME)  # dave's copy
    assert gitops_sandbox.person(CAROL).click(CHANNEL, held.ts, RESUME).status_code == 200
    wait_for(lambda: automated(kube) == AUTOMATED, what="Argo CD's automated sync back")
    store = gitops_sandbox.process.store
    run = store.runs.find()[0]
    resumed = wait_for(
        lambda: next(
            (
                m
                for m in gitops_sandbox.slack.messages(CHANNEL)
                if "resumed the GitOps sync" in m.text
            ),
            None,
        ),
        what="the resume in the thread",
    )
    assert resumed.text.startswith(f":arrow_forward: <@{CAROL}> resumed the GitOps sync")
    assert "applications voxflow in argocd: automatic sync resumed" in resumed.text
    updated = wait_for(
        lambda: (m := held_message(gitops_sandbox)) and not has_button(m) and m,
        what="the held message to lose its button",
    )
    assert f"Sync resumed by <@{CAROL}>" in text_of(updated)
    events = [e for e in store.events.of(run.incident_id) if e.kind == "sync.resumed"]
    assert [e.actor for e in events] == [CAROL]
    record = store.resumes.get(run.id)
    assert record is not None and (record.by, record.state) == (CAROL, "resumed")
    patches = application_patches(kube)

    assert gitops_sandbox.platform.interaction(stale).status_code == 200  # dave, approver by group
    told = wait_for(
        lambda: next((e for e in gitops_sandbox.slack.ephemerals(CHANNEL) if e.user == DAVE), None),
        what="dave being told",
    )
    assert f"already resumed by <@{CAROL}>" in told.text and "nothing more was done" in told.text
    assert application_patches(kube) == patches  # the cluster was not called again
    assert [e.kind for e in store.events.of(run.incident_id)].count("sync.resumed") == 1


def test_resuming_before_git_is_reverted_is_caught_loudly_by_the_recheck(
    gitops_sandbox: Sandbox, kube: KubeCluster
) -> None:
    held = rolled_back(gitops_sandbox, kube)
    assert gitops_sandbox.person(CAROL).click(CHANNEL, held.ts, RESUME).status_code == 200
    wait_for(lambda: image(kube) == IMAGES[2], what="Argo CD self-heal to put v3 back")
    store = gitops_sandbox.process.store
    run = store.runs.find()[0]
    (recheck,) = store.rechecks.of(run.id)
    with store.session() as session:  # recheck_after (10m) has passed
        session.execute(
            update(Recheck).where(Recheck.id == recheck.id).values(due_at=store.clock())
        )
    gitops_sandbox.process.deps.wake_runner.set()
    alert = wait_for(
        lambda: next(
            (m for m in gitops_sandbox.slack.messages(CHANNEL) if "no longer runs" in m.text),
            None,
        ),
        what="the re-check alert",
    )
    said = text_of(alert)
    assert alert.reply_broadcast and alert.thread_ts is not None
    assert f"image {IMAGES[1]} → {IMAGES[2]}" in said
    for person in (ALICE, BOB, CAROL):  # the requester, who approved, the approvers
        assert f"<@{person}>" in said
    assert store.rechecks.of(run.id)[0].changed is True


def test_flux_is_resumed_by_the_button_and_reconciles_again(
    flux_sandbox: tuple[Sandbox, Any], kube: KubeCluster
) -> None:
    sandbox, owner = flux_sandbox
    held = rolled_back(sandbox, kube, argo=False)
    assert kube.fake.store.get(*owner)["spec"]["suspend"] is True
    assert "Flux kustomization apps in flux-system stays suspended" in text_of(held)
    assert sandbox.person(BOB).click(CHANNEL, held.ts, RESUME).status_code == 200
    wait_for(lambda: "suspend" not in kube.fake.store.get(*owner)["spec"], what="Flux resumed")
    wait_for(lambda: image(kube) == IMAGES[2], what="Flux to apply Git's version again")
