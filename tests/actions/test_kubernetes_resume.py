"""The resume contract for every Kubernetes step: crash at each change, restore, finish right.

Each step is interrupted at every call that changes the cluster, before and
after the change reaches the stand-in (a patched client method raises), or
left to finish; then `target.restore(step.name, step.spec())` runs with the
same memory and the end state is checked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import AppsV1Api, CustomObjectsApi

from actions.base import Action, PlanningError, StepContext, spec_of
from actions.kubernetes import KubernetesParams, KubernetesTarget
from actions.kubernetes.autoscaling import PAUSED, PAUSED_REPLICAS

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
API = "voxflow-api"
WORKER = "voxflow-worker"


class Crash(Exception):
    """The bot died here."""


def build(cluster: KubeCluster) -> KubernetesTarget:
    fake = cluster.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1", "voxflow/api:v2", "voxflow/api:v3"])
    fake.add_deployment(NS, WORKER, images=["voxflow/worker:v1"], replicas=2)
    fake.store.create(
        "scaledobjects",
        {
            "metadata": {"name": "worker-queue", "namespace": NS, "annotations": {PAUSED: "x"}},
            "spec": {"scaleTargetRef": {"name": WORKER}},
        },
    )
    params = KubernetesParams(
        kind="kubernetes",
        namespace=NS,
        deployment=API,
        workers=[WORKER],
        connection=cluster.connection,
    )
    return KubernetesTarget(params)


def crash_at(
    monkeypatch: pytest.MonkeyPatch, owner: type, method: str, *, after: bool, call: int = 1
) -> None:
    """Make the `call`-th call of owner.method raise Crash, before or after it is sent."""
    real = getattr(owner, method)
    calls = {"n": 0}

    @functools.wraps(real)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] != call:
            return real(self, *args, **kwargs)
        if after:
            real(self, *args, **kwargs)
        raise Crash(f"{method} #{call} {'after' if after else 'before'}")

    monkeypatch.setattr(owner, method, wrapper)


def context(memory: dict[str, Any]) -> StepContext:
    return StepContext.for_test(timeout=20.0, memory=memory)


def run_to_crash(step: Action, memory: dict[str, Any], *, crash_expected: bool) -> None:
    """Run the step; it must crash exactly when a crash point was set."""
    try:
        step.run(context(memory))
    except Crash:
        assert crash_expected
        return
    assert not crash_expected


def resume(
    target: KubernetesTarget, step: Action, memory: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.undo()
    restored = target.restore(step.name, spec_of(step))
    assert spec_of(restored) == spec_of(step)
    return restored.run(context(memory))


def image(cluster: KubeCluster) -> str:
    return str(
        cluster.fake.deployment(NS, API)["spec"]["template"]["spec"]["containers"][0]["image"]
    )


def stopped(cluster: KubeCluster) -> bool:
    scaled = cluster.fake.store.get("scaledobjects", NS, "worker-queue")
    return (
        cluster.fake.deployment(NS, WORKER)["spec"]["replicas"] == 0
        and cluster.fake.pods(NS, WORKER) == []
        and scaled["metadata"]["annotations"][PAUSED_REPLICAS] == "0"
    )


def started(cluster: KubeCluster) -> bool:
    scaled = cluster.fake.store.get("scaledobjects", NS, "worker-queue")
    deployment = cluster.fake.deployment(NS, WORKER)
    return (
        deployment["spec"]["replicas"] == 2
        and "rollback-bot/replicas-before-stop" not in deployment["metadata"]["annotations"]
        and scaled["metadata"]["annotations"] == {PAUSED: "x"}
    )


UNDO_POINTS = [None, ("patch_namespaced_deployment", False), ("patch_namespaced_deployment", True)]


@pytest.mark.parametrize("point", UNDO_POINTS, ids=["finished", "before patch", "after patch"])
def test_undo_resumes_to_the_approved_revision(
    kube: KubeCluster, monkeypatch: pytest.MonkeyPatch, point: tuple[str, bool] | None
) -> None:
    target = build(kube)
    step = target.plan(None).rollback[0]
    memory: dict[str, Any] = {}
    if point is not None:
        crash_at(monkeypatch, AppsV1Api, point[0], after=point[1])
    run_to_crash(step, memory, crash_expected=point is not None)
    kube.fake.settle(NS, API)
    revisions_before = len(kube.fake.replica_sets(NS, API))
    result = resume(target, step, memory, monkeypatch)
    kube.fake.settle(NS, API)
    assert image(kube) == "voxflow/api:v2"
    assert result.skipped == (point is None or point[1])
    assert len(kube.fake.replica_sets(NS, API)) == revisions_before  # no second rollout


STOP_POINTS = [
    None,
    (CustomObjectsApi, "patch_namespaced_custom_object", False),
    (CustomObjectsApi, "patch_namespaced_custom_object", True),
    (AppsV1Api, "patch_namespaced_deployment", False),
    (AppsV1Api, "patch_namespaced_deployment", True),
    (AppsV1Api, "patch_namespaced_deployment_scale", False),
    (AppsV1Api, "patch_namespaced_deployment_scale", True),
]
STOP_IDS = [
    "finished",
    "before KEDA pause",
    "after KEDA pause",
    "before count annotation",
    "after count annotation",
    "before scale",
    "after scale",
]


@pytest.mark.parametrize("point", STOP_POINTS, ids=STOP_IDS)
def test_stop_and_start_workers_resume_to_the_recorded_state(
    kube: KubeCluster, monkeypatch: pytest.MonkeyPatch, point: tuple[type, str, bool] | None
) -> None:
    target = build(kube)
    plan = target.plan(None)
    stop, start = plan.prepare[0], plan.resume[0]
    memory: dict[str, Any] = {}
    if point is not None:
        crash_at(monkeypatch, point[0], point[1], after=point[2])
    run_to_crash(stop, memory, crash_expected=point is not None)
    result = resume(target, stop, memory, monkeypatch)
    assert stopped(kube)
    if point is None or point[1:] != ("patch_namespaced_deployment_scale", True):
        assert result.skipped == (point is None)  # after the last change: pods may still exit
    assert memory[f"kubernetes/{NS}/{WORKER}/replicas-before-stop"] == 2

    # And the same for the restart, crashing at the same kind of call.
    if point is not None:
        crash_at(monkeypatch, point[0], point[1], after=point[2])
    run_to_crash(start, memory, crash_expected=point is not None)
    again = resume(target, start, memory, monkeypatch)
    assert started(kube)
    if point is None or point[1:] != ("patch_namespaced_deployment", True):
        assert again.skipped == (point is None)  # after its last change it is all done


def test_status_step_restores_and_runs(kube: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    target = build(kube)
    step = target.plan(None).verify[0]
    assert resume(target, step, {}, monkeypatch).summary.endswith("successfully rolled out")


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("kubernetes.scale_everything", {"namespace": NS, "timeout": 1}, "has no step"),
        ("kubernetes.rollout_undo", {"namespace": NS, "timeout": 1}, "cannot be read"),
    ],
)
def test_restore_refuses_unknown_steps_and_broken_specs(
    kube: KubeCluster, name: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanningError, match=message):
        build(kube).restore(name, spec)


def test_every_planned_step_has_a_spec(kube: KubeCluster) -> None:
    plan = build(kube).plan(None)
    steps: list[Callable[..., Any]] = [*plan.prepare, *plan.rollback, *plan.verify, *plan.resume]
    assert all(spec_of(step) for step in steps)
