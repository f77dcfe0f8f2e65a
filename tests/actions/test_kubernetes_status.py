"""Rollout status after a rollout that exceeded its deadline, and minReadySeconds, on the stand-in.

The stand-in keeps a timed-out Progressing condition as the deployment
controller does (progress.go syncRolloutStatus) until it sees progress; its
ReplicaSet controller is held back (replica_set_delay) until the bot has seen
that stale status, so every run exercises it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PermanentError, StepContext
from actions.kubernetes import (
    KubernetesParams,
    KubernetesTarget,
    RolloutStatus,
    rollout_undo,
    rollout_verdict,
    status,
)
from actions.kubernetes.client import read_deployment
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
API = "voxflow-api"
GOOD, BAD = "voxflow/api:v2", "voxflow/api:v3"
FROZEN = 3600.0


def progressing(cluster: KubeCluster) -> dict[str, Any]:
    conditions = cluster.fake.deployment(NS, API)["status"].get("conditions") or []
    return next(c for c in conditions if c["type"] == "Progressing")


def bad_release_timed_out(cluster: KubeCluster, *, replicas: int, strategy: str) -> str:
    """Roll out a release whose pods never become ready until its deadline passes; return its RS."""
    fake = cluster.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1", GOOD], replicas=replicas)
    if strategy == "Recreate":
        change = {"type": "Recreate", "rollingUpdate": None}
        fake.update_deployment(NS, API, {"spec": {"strategy": change}})
    fake.settle(NS, API)
    fake.break_image(BAD)
    fake.expire_progress_deadlines(NS, API)
    template = fake.deployment(NS, API)["spec"]["template"]
    template["spec"]["containers"][0]["image"] = BAD
    fake.update_deployment(NS, API, {"spec": {"template": template}})
    wait_for(
        lambda: progressing(cluster)["reason"] == "ProgressDeadlineExceeded",
        what="the bad release to exceed its progress deadline",
    )
    fake.expire_progress_deadlines(NS, API, expired=False)
    return str(fake.replica_sets(NS, API)[-1]["metadata"]["name"])


@pytest.mark.parametrize(
    ("replicas", "strategy"),
    [(1, "RollingUpdate"), (2, "Recreate")],
    ids=["one replica", "Recreate"],
)
def test_stand_in_keeps_the_stale_deadline_with_the_new_generation_observed(
    kube: KubeCluster, replicas: int, strategy: str
) -> None:
    bad_rs = bad_release_timed_out(kube, replicas=replicas, strategy=strategy)
    kube.fake.replica_set_delay = FROZEN
    rollout_undo(kube.apps, namespace=NS, name=API)
    stale = wait_for(
        lambda: (
            (d := kube.fake.deployment(NS, API))["status"].get("observedGeneration")
            == d["metadata"]["generation"]
            and d
        ),
        what="the controller to observe the rollback",
    )
    condition = next(c for c in stale["status"]["conditions"] if c["type"] == "Progressing")
    assert (condition["reason"], condition["message"]) == (
        "ProgressDeadlineExceeded",
        f'ReplicaSet "{bad_rs}" has timed out progressing.',
    )
    # kubectl fails here, although the rollback is fine; so does its rule in the bot's verdict:
    result = kube.kubectl("rollout", "status", f"deployment/{API}", "-n", NS, "--timeout=10s")
    assert result.returncode == 1
    assert f'deployment "{API}" exceeded its progress deadline' in result.stderr
    with pytest.raises(PermanentError, match="exceeded its progress deadline"):
        rollout_verdict(read_deployment(kube.apps, namespace=NS, name=API))
    kube.fake.replica_set_delay = 0.0
    wait_for(
        lambda: progressing(kube)["reason"] == "NewReplicaSetAvailable",
        what="the rollback to complete",
    )


@pytest.mark.parametrize(
    ("replicas", "strategy"),
    [(1, "RollingUpdate"), (2, "Recreate")],
    ids=["one replica", "Recreate"],
)
def test_status_ignores_the_stale_deadline_of_the_replica_set_rolled_away_from(
    kube: KubeCluster, replicas: int, strategy: str
) -> None:
    bad_rs = bad_release_timed_out(kube, replicas=replicas, strategy=strategy)
    kube.fake.terminate_delay = 0.2
    kube.fake.replica_set_delay = FROZEN
    rollout_undo(kube.apps, namespace=NS, name=API)
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        if line.startswith("ignoring"):
            kube.fake.replica_set_delay = 0.0  # the bot has seen it: let the rollback proceed

    ctx = StepContext.for_test(timeout=20.0, emit=emit)
    result = RolloutStatus(apps=kube.apps, namespace=NS, deployment=API).run(ctx)
    assert result.summary == f'deployment "{API}" successfully rolled out'
    assert any(f'stale progress deadline of ReplicaSet "{bad_rs}"' in line for line in lines)
    deployment = kube.fake.deployment(NS, API)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD
    assert deployment["status"]["availableReplicas"] == replicas


def test_status_fails_on_a_deadline_of_the_restored_replica_set(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=["voxflow/api:v1", GOOD], replicas=2)
    kube.fake.break_image("voxflow/api:v1")
    kube.fake.expire_progress_deadlines(NS, API)
    rollout_undo(kube.apps, namespace=NS, name=API)
    ctx = StepContext.for_test(timeout=10.0, emit=lambda line: None)
    with pytest.raises(PermanentError, match="exceeded its progress deadline"):
        RolloutStatus(apps=kube.apps, namespace=NS, deployment=API).run(ctx)
    rs = kube.fake.replica_sets(NS, API)[-1]["metadata"]["name"]
    assert progressing(kube)["message"] == f'ReplicaSet "{rs}" has timed out progressing.'


def _newest_ready(fake: Any, count: int) -> Any:
    rs = fake.replica_sets(NS, API)[-1]
    image = rs["spec"]["template"]["spec"]["containers"][0]["image"]
    return image == GOOD and rs["status"].get("readyReplicas", 0) >= count and rs


def test_min_ready_seconds_delays_availability(kube: KubeCluster) -> None:
    fake = kube.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1"], replicas=2)
    template = fake.deployment(NS, API)["spec"]["template"]
    template["spec"]["containers"][0]["image"] = GOOD
    fake.update_deployment(NS, API, {"spec": {"minReadySeconds": 30, "template": template}})
    newest = wait_for(lambda: _newest_ready(fake, 1), what="the first new pod to become ready")
    assert newest["spec"]["minReadySeconds"] == 30
    # Ready but not yet available: maxUnavailable 0 keeps both old pods, maxSurge 1 stops the new.
    assert (newest["spec"]["replicas"], newest["status"].get("availableReplicas", 0)) == (1, 0)
    assert fake.settle(NS, API)["status"].get("availableReplicas") == 2  # the two old pods
    assert not rollout_verdict(read_deployment(kube.apps, namespace=NS, name=API))[1]
    fake.advance_clock(31)
    wait_for(
        lambda: _newest_ready(fake, 2), what="the second new pod after the first was available"
    )
    assert not rollout_verdict(read_deployment(kube.apps, namespace=NS, name=API))[1]
    fake.advance_clock(31)
    wait_for(
        lambda: rollout_verdict(read_deployment(kube.apps, namespace=NS, name=API))[1],
        what="the rollout to complete once both new pods were ready for minReadySeconds",
    )


def test_scaled_down_pods_are_listed_as_terminating_for_their_grace_period(
    kube: KubeCluster,
) -> None:
    fake = kube.fake
    fake.add_deployment(NS, "voxflow-worker", images=["voxflow/worker:v1"], replicas=2)
    fake.terminate_delay = FROZEN
    fake.update_deployment(NS, "voxflow-worker", {"spec": {"replicas": 0}})
    terminating = wait_for(
        lambda: [
            p for p in fake.pods(NS, "voxflow-worker") if p["metadata"].get("deletionTimestamp")
        ],
        what="pods to start terminating",
    )
    assert fake.settle(NS, "voxflow-worker")["status"].get("replicas", 0) == 0
    assert [p["metadata"]["deletionGracePeriodSeconds"] for p in terminating] == [30, 30]
    listing = kube.kubectl("get", "pods", "-n", NS)
    assert "Terminating" in listing.stdout
    fake.advance_clock(31)  # past every grace period: the kubelet has killed them
    wait_for(lambda: not fake.pods(NS, "voxflow-worker"), what="the pods to be gone")


def test_recreate_waits_for_terminating_old_pods(kube: KubeCluster) -> None:
    fake = kube.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1"], replicas=2)
    change = {"type": "Recreate", "rollingUpdate": None}
    fake.update_deployment(NS, API, {"spec": {"strategy": change}})
    fake.terminate_delay = FROZEN  # old pods take their whole grace period
    template = fake.deployment(NS, API)["spec"]["template"]
    template["spec"]["containers"][0]["image"] = GOOD
    fake.update_deployment(NS, API, {"spec": {"template": template}})
    wait_for(
        lambda: all(p["metadata"].get("deletionTimestamp") for p in fake.pods(NS, API)),
        what="the old pods to be terminating",
    )
    fake.settle(NS, API)
    # recreate.go oldPodsRunning: terminating pods still count, so no new ReplicaSet yet.
    assert [
        rs["spec"]["template"]["spec"]["containers"][0]["image"]
        for rs in fake.replica_sets(NS, API)
    ] == ["voxflow/api:v1"]
    assert fake.deployment(NS, API)["status"].get("replicas", 0) == 0
    fake.advance_clock(31)
    wait_for(
        lambda: fake.settle(NS, API)["status"].get("updatedReplicas") == 2,
        what="the new pods once the old ones are gone",
    )


def test_a_long_wait_says_where_it_stands_though_nothing_changes(
    kube: KubeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stuck rollout (a new pod that never becomes ready) changes nothing for minutes; the
    step still says where it stands every SPEAK_EVERY seconds (15 in production), so the
    progress line in the thread is never silent."""
    monkeypatch.setattr(status, "SPEAK_EVERY", 1.0)  # a watch lasts whole seconds
    fake = kube.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1"], replicas=3)
    fake.settle(NS, API)
    fake.break_image(BAD)
    template = fake.deployment(NS, API)["spec"]["template"]
    template["spec"]["containers"][0]["image"] = BAD
    fake.update_deployment(NS, API, {"spec": {"template": template}})
    said: list[str] = []
    ctx = StepContext.for_test(timeout=5.0, emit=said.append)
    with pytest.raises(PermanentError, match="timed out waiting for deployment/voxflow-api"):
        RolloutStatus(apps=kube.apps, namespace=NS, deployment=API, timeout=5.0).run(ctx)
    waiting = [line for line in said if "(still waiting, " in line]
    assert len(waiting) >= 2, said
    assert all(line.split(" (still waiting")[0] in said for line in waiting)


def test_a_revision_runs_only_when_its_pods_are_ready(kube: KubeCluster) -> None:
    """The template names the new revision at once; the point says it is not serving yet."""
    fake = kube.fake
    fake.add_deployment(NS, API, images=["voxflow/api:v1", GOOD], replicas=3)
    fake.settle(NS, API)
    target = KubernetesTarget(
        KubernetesParams(
            kind="kubernetes", namespace=NS, deployment=API, connection=kube.connection
        )
    )
    (current,) = [p for p in target.points() if p.is_current]
    assert current.version == GOOD and current.unready == ""
    fake.break_image(BAD)
    template = fake.deployment(NS, API)["spec"]["template"]
    template["spec"]["containers"][0]["image"] = BAD
    fake.update_deployment(NS, API, {"spec": {"template": template}})
    stuck = wait_for(
        lambda: next((p for p in target.points() if p.is_current and p.version == BAD), None),
        what="the bad release to become the Deployment's template",
    )
    assert stuck.unready == (
        "only 0 of its 3 pods ready; 3 pods of older revisions still ready and serving"
    )
