"""The Resume sync use case against the stand-in's Argo CD: rules, one resume, a retry.

The Slack side (signed clicks, who is told what) is tests/handlers/test_gitops_resume.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bot.application.resync import Resync, held_owners
from bot.execution.workflow import Refused, Workflow
from tests.fakes.config import ALICE, BOB, CAROL
from tests.fakes.gitops import APP, AUTOMATED, World

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.gitops"]


def resync(world: World) -> Resync:
    return Resync(
        store=world.store,
        config=world.config,
        planner=world.planner,
        workflow=Workflow(store=world.store, config=world.config),
    )


def test_the_run_knows_which_owner_it_left_suspended(rolled_back: World) -> None:
    (owner,) = held_owners(rolled_back.run)
    assert (owner.tool, owner.namespace, owner.name) == ("argocd", "argocd", "voxflow")
    assert owner.label == "Argo CD application voxflow in argocd"


def test_a_non_approver_is_refused_and_nothing_is_recorded(
    rolled_back: World, kube: KubeCluster
) -> None:
    with pytest.raises(Refused, match="only approvers of prod may resume the sync"):
        resync(rolled_back).resume(rolled_back.run.id, user=ALICE, user_groups=frozenset())
    assert rolled_back.store.resumes.get(rolled_back.run.id) is None
    assert "automated" not in kube.fake.store.get(*APP)["spec"]["syncPolicy"]


def test_an_approver_by_group_resumes_once(rolled_back: World, kube: KubeCluster) -> None:
    first = resync(rolled_back).resume(
        rolled_back.run.id, user=CAROL, user_groups=frozenset({"SDBAS00001"})
    )
    assert first.resumed and first.lines == (
        "applications voxflow in argocd: automatic sync resumed",
    )
    assert kube.fake.store.get(*APP)["spec"]["syncPolicy"]["automated"] == AUTOMATED
    again = resync(rolled_back).resume(rolled_back.run.id, user=BOB, user_groups=frozenset())
    assert (again.resumed, again.by, again.state) == (False, CAROL, "resumed")
    assert [m.kind for m in rolled_back.messages("gitops.resumed")] == ["gitops.resumed"]


def test_a_failed_resume_is_said_and_may_be_pressed_again(
    rolled_back: World, kube: KubeCluster
) -> None:
    application = kube.fake.store.get(*APP)
    kube.fake.store.delete(*APP)
    with pytest.raises(Refused, match=r"is gone.*press Resume sync again"):
        resync(rolled_back).resume(rolled_back.run.id, user=BOB, user_groups=frozenset())
    record = rolled_back.store.resumes.get(rolled_back.run.id)
    assert record is not None and record.state == "failed"
    (said,) = rolled_back.messages("gitops.resumed")
    assert said.detail["ok"] is False
    kinds = [e.kind for e in rolled_back.store.events.of(rolled_back.run.incident_id)]
    assert "sync.resume_failed" in kinds

    for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        application["metadata"].pop(key, None)
    kube.fake.store.create("applications", application)
    again = resync(rolled_back).resume(rolled_back.run.id, user=CAROL, user_groups=frozenset())
    assert again.resumed and again.by == CAROL
    assert kube.fake.store.get(*APP)["spec"]["syncPolicy"]["automated"] == AUTOMATED
