"""The Kubernetes target for StatefulSets and DaemonSets: config, points, checks, plan, resume."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import AppsV1Api
from pydantic import ValidationError

from actions.base import PlanningError, StepContext, spec_of
from actions.kubernetes import KubernetesParams, KubernetesTarget

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
IMAGES = ["voxflow/db:v1", "voxflow/db:v2", "voxflow/db:v3"]


def target(cluster: KubeCluster, workload: str, name: str) -> KubernetesTarget:
    params = KubernetesParams(
        kind="kubernetes",
        namespace=NS,
        workload=workload,
        name=name,
        connection=cluster.connection,
    )
    return KubernetesTarget(params)


def image(cluster: KubeCluster, resource: str, name: str) -> str:
    obj = cluster.fake.store.get(resource, NS, name)
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def test_config_keeps_deployment_and_names_other_workloads() -> None:
    old = KubernetesParams.model_validate(
        {"kind": "kubernetes", "namespace": NS, "deployment": "voxflow-api"}
    )
    assert (old.workload, old.name, old.deployment) == ("deployment", "voxflow-api", "voxflow-api")
    with pytest.raises(ValidationError, match="for workload: statefulset give the name as 'name:'"):
        KubernetesParams.model_validate(
            {"kind": "kubernetes", "namespace": NS, "workload": "statefulset", "deployment": "db"}
        )
    with pytest.raises(ValidationError, match="give the workload's name as 'name:'"):
        KubernetesParams.model_validate({"kind": "kubernetes", "namespace": NS})


@pytest.mark.parametrize(
    ("workload", "resource"), [("statefulset", "statefulsets"), ("daemonset", "daemonsets")]
)
def test_plan_rolls_a_workload_back_and_waits_for_it(
    kube: KubeCluster, workload: str, resource: str
) -> None:
    kube.fake.add_workload(resource, NS, "db", images=IMAGES)
    chosen = target(kube, workload, "db")
    points = chosen.points()
    assert [(p.ref, p.is_current) for p in points] == [("3", True), ("2", False), ("1", False)]
    assert points[1].label.startswith("rev 2 · voxflow/db:v2 · ")
    assert [c.ok for c in chosen.checks(None)] == [True] * 6
    plan = chosen.plan(None)
    assert plan.rollback[0].describe() == (
        f"Roll back {workload}/db in {NS} from revision 3 to revision 2 (voxflow/db:v2)"
    )
    forced = ["kubernetes.forced_rollback"] if workload == "statefulset" else []  # OrderedReady
    assert [a.name for a in plan.rollback[1:]] == forced
    ctx = StepContext.for_test(timeout=20.0)
    for step in plan.rollback + plan.verify:
        step.run(ctx)
    assert image(kube, resource, "db") == "voxflow/db:v2"
    assert [p.ref for p in chosen.points() if p.is_current] == ["4"]  # renumbered


def test_plan_refuses_on_delete_and_names_a_partition(kube: KubeCluster) -> None:
    kube.fake.add_workload("statefulsets", NS, "db", images=IMAGES, strategy={"type": "OnDelete"})
    with pytest.raises(PlanningError, match="updateStrategy OnDelete"):
        target(kube, "statefulset", "db").plan(None)
    assert not target(kube, "statefulset", "db").checks(None)[1].ok
    partitioned = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    kube.fake.add_workload("statefulsets", NS, "shard", images=IMAGES, strategy=partitioned)
    notes = target(kube, "statefulset", "shard").plan("1").notes
    assert any("partition 1: only pods 1 and up go back to revision 1" in n for n in notes)


def test_plan_for_the_current_revision_needs_force(kube: KubeCluster) -> None:
    kube.fake.add_workload("daemonsets", NS, "agent", images=IMAGES[:2])
    with pytest.raises(PlanningError, match="already runs revision 2"):
        target(kube, "daemonset", "agent").plan("2")
    forced = target(kube, "daemonset", "agent").plan("2", force=True)
    assert forced.rollback[0].run(StepContext.for_test()).skipped


@pytest.mark.parametrize("after", [False, True], ids=["before patch", "after patch"])
def test_workload_undo_resumes_after_a_crash(
    kube: KubeCluster, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    kube.fake.add_workload("statefulsets", NS, "db", images=IMAGES)
    chosen = target(kube, "statefulset", "db")
    plan = chosen.plan(None)
    step, wait = plan.rollback[0], plan.verify[0]
    real = AppsV1Api.patch_namespaced_stateful_set

    def crash(self: AppsV1Api, *args: Any, **kwargs: Any) -> Any:
        if after:
            real(self, *args, **kwargs)
        raise RuntimeError("the bot died")

    monkeypatch.setattr(AppsV1Api, "patch_namespaced_stateful_set", crash)
    with pytest.raises(RuntimeError):
        step.run(StepContext.for_test())
    monkeypatch.undo()
    kube.fake.settle_workload("statefulsets", NS, "db")
    result = chosen.restore(step.name, spec_of(step)).run(StepContext.for_test())
    assert result.skipped == after
    assert image(kube, "statefulsets", "db") == "voxflow/db:v2"
    status = chosen.restore(wait.name, spec_of(wait)).run(StepContext.for_test(timeout=20.0))
    assert status.summary == "partitioned roll out complete: 2 new pods have been updated..."
