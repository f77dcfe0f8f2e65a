"""Kubernetes rollback actions against the sandbox's fake API server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    V1Deployment,
    V1DeploymentCondition,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1PodTemplateSpec,
)

from actions.base import Action, PermanentError, PlanningError, StepContext, TemporaryError
from actions.kubernetes import (
    PAUSED,
    WORKER_REPLICAS,
    KubeConnection,
    KubernetesParams,
    KubernetesTarget,
    RolloutStatus,
    RolloutUndo,
    StartWorkers,
    StopWorkers,
    api_client,
    rollout_history,
    rollout_undo,
    rollout_verdict,
)
from sandbox.web import Reply, WebStub

if TYPE_CHECKING:
    from tests.fakes.kube import ClusterFactory, KubeCluster

pytest_plugins = ["tests.fakes.kube"]

NS = "voxflow-prod"
API = "voxflow-api"
IMAGES = ["voxflow/api:v1.2.2", "voxflow/api:v1.2.3", "voxflow/api:v1.3.0"]
WORKERS = ("voxflow-worker", "voxflow-scheduler")


def deploy(cluster: KubeCluster, *, workers: bool = True) -> None:
    """Create voxflow-api with three revisions and, optionally, its two workers."""
    cluster.fake.add_deployment(NS, API, images=IMAGES, replicas=3, container_name="api")
    if workers:
        cluster.fake.add_deployment(NS, "voxflow-worker", images=["voxflow/worker:v1"], replicas=2)
        cluster.fake.add_deployment(
            NS, "voxflow-scheduler", images=["voxflow/scheduler:v1"], replicas=1
        )


def target(cluster: KubeCluster, **overrides: Any) -> KubernetesTarget:
    """Build the target for voxflow-api with the cluster's kubeconfig."""
    fields: dict[str, Any] = {
        "kind": "kubernetes",
        "namespace": NS,
        "deployment": API,
        "workers": list(WORKERS),
        "connection": cluster.connection,
    }
    return KubernetesTarget(KubernetesParams(**(fields | overrides)))


def context(
    timeout: float = 20.0, memory: dict[str, Any] | None = None
) -> tuple[StepContext, list[str]]:
    """Build a step context whose emitted lines are collected."""
    lines: list[str] = []
    ctx = StepContext.for_test(
        timeout=timeout, emit=lines.append, memory={} if memory is None else memory
    )
    return ctx, lines


def replicas(cluster: KubeCluster, name: str) -> int:
    return int(cluster.fake.settle(NS, name)["spec"]["replicas"])


def image(cluster: KubeCluster, name: str = API) -> str:
    return str(
        cluster.fake.deployment(NS, name)["spec"]["template"]["spec"]["containers"][0]["image"]
    )


# --- connection -------------------------------------------------------------------------------


def test_api_client_uses_the_kubeconfig_context(kube: KubeCluster, tmp_path: Path) -> None:
    other = kube.fake.write_kubeconfig(tmp_path / "other", context="prod")
    client = api_client(KubeConnection(kubeconfig=str(other), context="prod"))
    assert client.configuration.host == kube.fake.url
    assert AppsV1Api(client).list_namespaced_deployment(NS).items == []


def test_api_client_leaves_the_global_configuration_alone(kube: KubeCluster) -> None:
    before = Configuration._default
    api_client(kube.connection)
    assert Configuration._default is before


def test_api_client_in_cluster_reads_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    cert.write_text("certificate")
    monkeypatch.setattr("kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr("kubernetes.config.incluster_config.SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = api_client(KubeConnection(mode="in-cluster"))
    assert client.configuration.host == "https://10.96.0.1:443"
    assert "bearer sa-token" in client.configuration.api_key.values()


def test_api_client_with_a_missing_kubeconfig_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="cannot load the Kubernetes connection"):
        api_client(KubeConnection(kubeconfig=str(tmp_path / "absent")))


# --- API errors ---------------------------------------------------------------------------------


def _apps_at(url: str) -> AppsV1Api:
    return AppsV1Api(ApiClient(Configuration(host=url)))


def test_server_errors_are_temporary() -> None:
    status = {
        "kind": "Status",
        "status": "Failure",
        "reason": "InternalError",
        "message": "etcd timeout",
        "code": 503,
    }
    with WebStub() as web:
        web.route(
            "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{API}", Reply(503, json=status)
        )
        with pytest.raises(TemporaryError, match="etcd timeout"):
            rollout_history(_apps_at(web.url), namespace=NS, name=API)


def test_forbidden_is_permanent() -> None:
    status = {
        "kind": "Status",
        "reason": "Forbidden",
        "message": "deployments is forbidden",
        "code": 403,
    }
    with WebStub() as web:
        web.route(
            "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{API}", Reply(403, json=status)
        )
        with pytest.raises(
            PermanentError, match=r"Error from server \(Forbidden\): deployments is forbidden"
        ):
            rollout_history(_apps_at(web.url), namespace=NS, name=API)


def test_unreachable_api_server_is_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TemporaryError, match="cannot reach the API server"):
        rollout_history(_apps_at(f"http://127.0.0.1:{port}"), namespace=NS, name=API)


def test_missing_deployment_is_reported_like_kubectl(apps: AppsV1Api) -> None:
    with pytest.raises(
        PermanentError, match=r'Error from server \(NotFound\): deployments.apps "nope" not found'
    ):
        rollout_undo(apps, namespace=NS, name="nope")


# --- history ----------------------------------------------------------------------------------


def test_history_lists_revisions_newest_first_with_images_and_causes(
    kube: KubeCluster, apps: AppsV1Api
) -> None:
    deploy(kube, workers=False)
    history = rollout_history(apps, namespace=NS, name=API)
    assert [(r.number, r.images, r.is_current) for r in history] == [
        (3, ("voxflow/api:v1.3.0",), True),
        (2, ("voxflow/api:v1.2.3",), False),
        (1, ("voxflow/api:v1.2.2",), False),
    ]
    assert (
        history[1].change_cause == "kubectl set image deployment/voxflow-api api=voxflow/api:v1.2.3"
    )
    assert history[0].created_at is not None and history[2].created_at is not None
    assert history[0].created_at > history[2].created_at


def test_history_ignores_replica_sets_the_deployment_does_not_control(
    kube: KubeCluster, apps: AppsV1Api
) -> None:
    deploy(kube, workers=False)
    stray = kube.fake.replica_sets(NS, API)[0]
    stray["metadata"] = {
        "name": "voxflow-api-stray",
        "namespace": NS,
        "labels": stray["metadata"]["labels"],
        "annotations": {"deployment.kubernetes.io/revision": "7"},
    }
    kube.fake.store.create("replicasets", stray)
    assert [r.number for r in rollout_history(apps, namespace=NS, name=API)] == [3, 2, 1]


def test_undo_renumbers_the_restored_revision(kube: KubeCluster, apps: AppsV1Api) -> None:
    deploy(kube, workers=False)
    assert rollout_undo(apps, namespace=NS, name=API) == f"deployment.apps/{API} rolled back"
    kube.fake.settle(NS, API)
    history = rollout_history(apps, namespace=NS, name=API)
    assert [(r.number, r.images[0], r.is_current) for r in history] == [
        (4, "voxflow/api:v1.2.3", True),
        (3, "voxflow/api:v1.3.0", False),
        (1, "voxflow/api:v1.2.2", False),
    ]


def test_undo_refuses_a_negative_revision(apps: AppsV1Api) -> None:
    with pytest.raises(PermanentError, match="unable to find specified revision -1 in history"):
        rollout_undo(apps, namespace=NS, name=API, to_revision=-1)


# --- rollout status ------------------------------------------------------------------------------


def _deployment(
    *, generation: int = 2, observed: int = 2, reason: str = "ReplicaSetUpdated", **status: int
) -> V1Deployment:
    condition = V1DeploymentCondition(type="Progressing", status="True", reason=reason)
    return V1Deployment(
        metadata=V1ObjectMeta(name=API, generation=generation),
        spec=V1DeploymentSpec(replicas=3, selector=V1LabelSelector(), template=V1PodTemplateSpec()),
        status=V1DeploymentStatus(observed_generation=observed, conditions=[condition], **status),
    )


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        (
            _deployment(generation=3, reason="ProgressDeadlineExceeded"),
            ("waiting for the controller to observe the new template", False),
        ),
        (_deployment(updated_replicas=1, replicas=4), ("1 of 3 new replicas updated", False)),
        (
            _deployment(updated_replicas=3, replicas=4, available_replicas=4),
            ("1 old replicas pending termination", False),
        ),
        (
            _deployment(updated_replicas=3, replicas=3, available_replicas=2),
            ("2 of 3 new replicas available", False),
        ),
        (
            _deployment(updated_replicas=3, replicas=3, available_replicas=3),
            (f'deployment "{API}" successfully rolled out', True),
        ),
    ],
    ids=["unobserved before deadline", "updating", "old pending", "available", "done"],
)
def test_verdict_follows_kubectls_order(
    deployment: V1Deployment, expected: tuple[str, bool]
) -> None:
    assert rollout_verdict(deployment) == expected


def test_verdict_fails_on_progress_deadline_exceeded() -> None:
    with pytest.raises(PermanentError, match=f'deployment "{API}" exceeded its progress deadline'):
        rollout_verdict(_deployment(reason="ProgressDeadlineExceeded", updated_replicas=1))


def _status_step(cluster: KubeCluster, timeout: float = 300.0) -> RolloutStatus:
    return RolloutStatus(apps=cluster.apps, namespace=NS, deployment=API, timeout=timeout)


def test_rollout_status_reports_progress_then_success(kube_clusters: ClusterFactory) -> None:
    cluster = kube_clusters(ready_delay=0.15)
    deploy(cluster, workers=False)
    rollout_undo(cluster.apps, namespace=NS, name=API)
    ctx, lines = context()
    result = _status_step(cluster).run(ctx)
    assert result.summary == f'deployment "{API}" successfully rolled out'
    assert any("of 3 new replicas updated" in line for line in lines[:-1])
    assert lines[-1] == result.summary


def test_rollout_status_fails_on_progress_deadline_exceeded(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    kube.fake.fail_rollouts(NS, API)
    rollout_undo(kube.apps, namespace=NS, name=API)
    with pytest.raises(PermanentError, match="exceeded its progress deadline"):
        _status_step(kube).run(context(timeout=5)[0])


def test_rollout_status_fails_at_the_steps_deadline(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    kube.fake.block_ready(NS, API)
    rollout_undo(kube.apps, namespace=NS, name=API)
    ctx, lines = context(timeout=0.6)
    with pytest.raises(PermanentError, match="timed out waiting for deployment/voxflow-api"):
        _status_step(kube).run(ctx)
    assert lines and "successfully" not in lines[-1]


def test_rollout_status_turns_a_vanished_api_server_into_a_temporary_error(
    kube_clusters: ClusterFactory,
) -> None:
    cluster = kube_clusters()
    deploy(cluster, workers=False)
    cluster.fake.block_ready(NS, API)
    rollout_undo(cluster.apps, namespace=NS, name=API)
    ctx, _ = context(timeout=10)

    def stop_the_server(line: str) -> None:
        cluster.fake.stop()

    ctx.emit = stop_the_server
    with pytest.raises(TemporaryError, match="cannot reach the API server"):
        _status_step(cluster).run(ctx)


def test_rollout_status_of_a_missing_deployment_is_permanent(kube: KubeCluster) -> None:
    with pytest.raises(PermanentError, match="not found"):
        _status_step(kube).run(context()[0])


# --- undo action ---------------------------------------------------------------------------------


def _undo_step(cluster: KubeCluster, *, to: int, since: int) -> RolloutUndo:
    images = (IMAGES[to - 1],)
    return RolloutUndo(
        apps=cluster.apps,
        namespace=NS,
        deployment=API,
        to_revision=to,
        from_revision=since,
        images=images,
    )


def test_undo_step_names_both_revisions_and_the_image(kube: KubeCluster) -> None:
    step = _undo_step(kube, to=2, since=3)
    assert isinstance(step, Action)
    assert step.describe() == (
        "Roll back deployment/voxflow-api in voxflow-prod from revision 3 to revision 2 "
        "(voxflow/api:v1.2.3)"
    )


def test_undo_step_rolls_back_and_a_rerun_after_a_crash_is_skipped(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    first = _undo_step(kube, to=2, since=3).run(context()[0])
    kube.fake.settle(NS, API)
    again = _undo_step(kube, to=2, since=3).run(context(memory={})[0])
    assert (first.skipped, image(kube)) == (False, "voxflow/api:v1.2.3")
    assert (again.skipped, again.summary) == (True, "already at revision 2")


def test_undo_step_says_skipped_when_already_at_the_revision(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    result = _undo_step(kube, to=3, since=3).run(context()[0])
    assert (result.skipped, result.summary) == (True, "already at revision 3")


def test_undo_step_refuses_when_a_newer_revision_appeared(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    kube.kubectl("set", "image", f"deployment/{API}", "api=voxflow/api:v1.4.0", "-n", NS)
    kube.fake.settle(NS, API)
    with pytest.raises(PermanentError, match="is at revision 4, not 3 as approved"):
        _undo_step(kube, to=2, since=3).run(context()[0])
    assert image(kube) == "voxflow/api:v1.4.0"


def test_undo_step_refuses_a_paused_deployment(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    kube.fake.pause(NS, API)
    with pytest.raises(PermanentError, match="paused"):
        _undo_step(kube, to=2, since=3).run(context()[0])


# --- workers ----------------------------------------------------------------------------------


def _stop(cluster: KubeCluster) -> StopWorkers:
    return StopWorkers(apps=cluster.apps, namespace=NS, workers=WORKERS)


def _start(cluster: KubeCluster) -> StartWorkers:
    return StartWorkers(apps=cluster.apps, namespace=NS, workers=WORKERS)


def test_stop_workers_scales_to_zero_and_records_counts(kube: KubeCluster) -> None:
    deploy(kube)
    ctx, _ = context()
    result = _stop(kube).run(ctx)
    assert result.data["replicas_before_stop"] == {"voxflow-worker": 2, "voxflow-scheduler": 1}
    assert [replicas(kube, w) for w in WORKERS] == [0, 0]
    assert kube.fake.deployment(NS, "voxflow-worker")["status"].get("replicas", 0) == 0
    assert (
        kube.fake.deployment(NS, "voxflow-worker")["metadata"]["annotations"][WORKER_REPLICAS]
        == "2"
    )
    assert sorted(ctx.memory.values()) == [1, 2]


def test_start_workers_restores_counts_and_removes_the_annotation(kube: KubeCluster) -> None:
    deploy(kube)
    ctx, _ = context()
    _stop(kube).run(ctx)
    _start(kube).run(ctx)
    assert [replicas(kube, w) for w in WORKERS] == [2, 1]
    assert (
        WORKER_REPLICAS not in kube.fake.deployment(NS, "voxflow-worker")["metadata"]["annotations"]
    )


def test_stopping_twice_keeps_the_original_count(kube: KubeCluster) -> None:
    deploy(kube)
    for _ in range(2):
        _stop(kube).run(context()[0])
    _start(kube).run(context()[0])
    assert [replicas(kube, w) for w in WORKERS] == [2, 1]


def test_fresh_start_step_with_the_same_memory_restores_after_a_crash(kube: KubeCluster) -> None:
    deploy(kube)
    memory: dict[str, Any] = {}
    _stop(kube).run(context(memory=memory)[0])
    for worker in WORKERS:
        kube.fake.update_deployment(
            NS, worker, {"metadata": {"annotations": {WORKER_REPLICAS: None}}}
        )
    _start(kube).run(context(memory=dict(memory))[0])
    assert [replicas(kube, w) for w in WORKERS] == [2, 1]


def test_start_restores_from_the_annotation_when_memory_is_lost(kube: KubeCluster) -> None:
    deploy(kube)
    _stop(kube).run(context()[0])
    _start(kube).run(context(memory={})[0])
    assert [replicas(kube, w) for w in WORKERS] == [2, 1]


def test_start_without_any_record_fails_but_restores_the_others(kube: KubeCluster) -> None:
    deploy(kube)
    _stop(kube).run(context()[0])
    kube.fake.update_deployment(
        NS, "voxflow-worker", {"metadata": {"annotations": {WORKER_REPLICAS: None}}}
    )
    with pytest.raises(
        PermanentError, match="no replica count recorded for deployment/voxflow-worker"
    ):
        _start(kube).run(context(memory={})[0])
    assert [replicas(kube, w) for w in WORKERS] == [0, 1]


# --- target ----------------------------------------------------------------------------------


def test_points_label_revisions_and_mark_the_current_one(kube: KubeCluster) -> None:
    deploy(kube)
    points = target(kube).points()
    assert [p.ref for p in points] == ["3", "2", "1"]
    assert points[0].label.startswith("rev 3 · voxflow/api:v1.3.0 · ")
    assert points[0].label.endswith(" · current")
    assert points[1].label == "rev 2 · voxflow/api:v1.2.3 · 1h ago"
    assert [p.is_current for p in points] == [True, False, False]


def test_plan_defaults_to_the_previous_revision_with_workers_around_it(kube: KubeCluster) -> None:
    deploy(kube)
    plan = target(kube, rollout_timeout=42.0).plan(None)
    assert [a.describe() for a in plan.rollback] == [
        "Roll back deployment/voxflow-api in voxflow-prod from revision 3 to revision 2 "
        "(voxflow/api:v1.2.3)"
    ]
    assert [a.name for a in plan.prepare + plan.verify + plan.resume] == [
        "kubernetes.stop_workers",
        "kubernetes.rollout_status",
        "kubernetes.start_workers",
    ]
    assert plan.verify[0].timeout == 42.0


def test_plan_for_a_named_revision_resolves_it(kube: KubeCluster) -> None:
    deploy(kube, workers=False)
    plan = target(kube, workers=[]).plan("1")
    assert "to revision 1 (voxflow/api:v1.2.2)" in plan.rollback[0].describe()
    assert (plan.prepare, plan.resume) == ([], [])


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("9", "unable to find specified revision 9 in history"),
        ("latest", "'latest' is not a revision number"),
    ],
)
def test_plan_refuses_what_cannot_be_resolved(kube: KubeCluster, ref: str, message: str) -> None:
    deploy(kube)
    with pytest.raises(PlanningError, match=message):
        target(kube).plan(ref)


def test_plan_without_history_says_so(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=["voxflow/api:v1"])
    with pytest.raises(PlanningError, match=f'no rollout history found for deployment "{API}"'):
        target(kube, workers=[]).plan(None)


def test_plan_refuses_a_paused_deployment(kube: KubeCluster) -> None:
    deploy(kube)
    kube.fake.pause(NS, API)
    with pytest.raises(PlanningError) as caught:
        target(kube).plan(None)
    assert str(caught.value) == PAUSED


def test_plan_for_the_current_revision_needs_force(kube: KubeCluster) -> None:
    deploy(kube)
    with pytest.raises(PlanningError, match="already runs revision 3"):
        target(kube).plan("3")
    forced = target(kube).plan("3", force=True)
    assert forced.rollback[0].run(context()[0]).skipped


def test_plan_with_a_missing_worker_needs_force(kube: KubeCluster) -> None:
    deploy(kube)
    missing = target(kube, workers=["voxflow-worker", "voxflow-mailer"])
    with pytest.raises(PlanningError, match="voxflow-mailer"):
        missing.plan(None)
    plan = missing.plan(None, force=True)
    assert "deployment/voxflow-worker" in plan.prepare[0].describe()
    assert "voxflow-mailer" not in plan.prepare[0].describe()
    assert any("voxflow-mailer" in note for note in plan.notes)


def test_checks_pass_for_a_healthy_deployment(kube: KubeCluster) -> None:
    deploy(kube)
    checks = target(kube).checks(None)
    assert [(c.name, c.ok) for c in checks] == [
        ("rollback revision exists", True),
        ("deployment not paused", True),
        ("not managed by Argo Rollouts", True),
        ("workers found", True),
        ("GitOps owner known", True),
        ("permissions granted (SelfSubjectAccessReview)", True),
        ("undo accepted by the API server (dry run)", True),
    ]
    assert checks[0].detail == "revision 2: voxflow/api:v1.2.3"


def test_checks_report_paused_deployment_missing_revision_and_worker(kube: KubeCluster) -> None:
    deploy(kube)
    kube.fake.pause(NS, API)
    checks = target(kube, workers=["voxflow-mailer"]).checks("9")
    assert [c.ok for c in checks] == [False, False, True, False, True, True, False]
    assert "unable to find specified revision 9" in checks[0].detail
    assert "voxflow-mailer" in checks[3].detail


def test_whole_plan_rolls_back_and_restores_workers(kube_clusters: ClusterFactory) -> None:
    cluster = kube_clusters(ready_delay=0.05)
    deploy(cluster)
    plan = target(cluster).plan(None)
    ctx, lines = context()
    for step in plan.prepare + plan.rollback + plan.verify + plan.resume:
        step.run(ctx)
    assert image(cluster) == "voxflow/api:v1.2.3"
    assert cluster.fake.deployment(NS, API)["status"]["availableReplicas"] == 3
    assert [replicas(cluster, w) for w in WORKERS] == [2, 1]
    assert f"deployment.apps/{API} rolled back" in lines
