"""The re-check after a rollback, on the stand-in: `recheck_after` parsed, templates compared.

Something putting another template back is played by writing the workload as `kubectl
edit` or a pipeline would; the controllers then run as after any change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from actions.base import StepContext, spec_of
from actions.kubernetes import KubernetesParams, KubernetesTarget

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
IMAGES = ["voxflow/db:v1", "voxflow/db:v2", "voxflow/db:v3"]


def params(**extra: object) -> KubernetesParams:
    return KubernetesParams.model_validate(
        {"kind": "kubernetes", "namespace": NS, "deployment": "voxflow-api", **extra}
    )


@pytest.mark.parametrize(
    ("given", "seconds"), [(None, 600.0), ("10m", 600.0), ("45s", 45.0), ("1h", 3600.0), (0, 0.0)]
)
def test_recheck_after_reads_durations_and_defaults_to_ten_minutes(
    given: object, seconds: float
) -> None:
    extra = {} if given is None else {"recheck_after": given}
    assert params(**extra).recheck_after == seconds


@pytest.mark.parametrize("given", ["ten minutes", "-5", -5, True])
def test_a_recheck_after_that_is_no_duration_is_refused_clearly(given: object) -> None:
    with pytest.raises(ValidationError, match="recheck_after"):
        params(recheck_after=given)


def rolled_back(
    kube: KubeCluster, resource: str, workload: str
) -> tuple[KubernetesTarget, str, dict[str, Any]]:
    """Roll the workload back from v3 to v2; return the target and the undo step, as stored."""
    kube.fake.add_workload(resource, NS, "db", images=IMAGES)
    chosen = KubernetesTarget(
        KubernetesParams(
            kind="kubernetes",
            namespace=NS,
            workload=workload,  # type: ignore[arg-type]
            name="db",
            connection=kube.connection,
        )
    )
    plan = chosen.plan(None)
    ctx = StepContext.for_test(timeout=20.0)
    for step in plan.rollback + plan.verify:
        step.run(ctx)
    undo = plan.rollback[0]
    return chosen, undo.name, spec_of(undo)


@pytest.mark.parametrize(
    ("workload", "resource"), [("statefulset", "statefulsets"), ("daemonset", "daemonsets")]
)
def test_a_workload_put_back_to_the_bad_revision_is_found(
    kube: KubeCluster, workload: str, resource: str
) -> None:
    chosen, name, stored = rolled_back(kube, resource, workload)
    steady = chosen.recheck(name, stored)
    assert not steady.changed and steady.detail == f"{workload}/db still runs voxflow/db:v2"

    obj = kube.fake.store.get(resource, NS, "db")
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "voxflow/db:v3"
    kube.fake.store.update(resource, obj)
    kube.fake.settle_workload(resource, NS, "db")
    drift = chosen.recheck(name, stored)
    assert drift.changed
    assert (drift.restored, drift.live) == (("voxflow/db:v2",), ("voxflow/db:v3",))
    assert "image voxflow/db:v2 → voxflow/db:v3 (now revision 5)" in drift.detail
