"""The fake Kubernetes API server behaves like a real one for kubectl and the official client."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml
from kubernetes import watch
from kubernetes.client import AppsV1Api
from kubernetes.client.exceptions import ApiException

from sandbox.kubernetes import FakeKubernetes
from sandbox.kubernetes.objects import fnv1_32, hash_controller_revision, safe_encode
from sandbox.kubernetes.patches import json_patch, strategic_merge_patch

if TYPE_CHECKING:
    from tests.fakes.kube import ClusterFactory, KubeCluster

pytest_plugins = ["tests.fakes.kube"]
NAMESPACE = "voxflow-prod"

REVISION = "deployment.kubernetes.io/revision"


def _images(rs: dict) -> list[str]:
    return [c["image"] for c in rs["spec"]["template"]["spec"]["containers"]]


def test_kubectl_get_deployments_shows_the_deployment(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "voxflow-api", images=["voxflow/api:v1"], replicas=3)
    result = kube.kubectl("get", "deployments", "-n", NAMESPACE)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row.split()[:4] == ["voxflow-api", "3/3", "3", "3"]


def test_kubectl_rollout_history_lists_one_revision_per_image(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1", "api:2", "api:3"])
    result = kube.kubectl("rollout", "history", "deployment/api", "-n", NAMESPACE)
    revisions = [line.split()[0] for line in result.stdout.splitlines()[2:] if line.strip()]
    assert revisions == ["1", "2", "3"]


def test_objects_parse_into_the_clients_strict_models(kube: KubeCluster, apps: AppsV1Api) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1", "api:2"], replicas=2)
    deployment = apps.read_namespaced_deployment("api", NAMESPACE)
    replica_sets = apps.list_namespaced_replica_set(NAMESPACE).items
    scale = apps.read_namespaced_deployment_scale("api", NAMESPACE)
    assert deployment.metadata.creation_timestamp is not None
    assert deployment.status.conditions[-1].reason == "NewReplicaSetAvailable"
    assert {rs.metadata.owner_references[0].uid for rs in replica_sets} == {deployment.metadata.uid}
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=api")


def test_watch_streams_each_change_with_increasing_resource_versions(
    kube: KubeCluster, apps: AppsV1Api
) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"])
    listing = apps.list_namespaced_deployment(NAMESPACE)
    apps.patch_namespaced_deployment_scale("api", NAMESPACE, {"spec": {"replicas": 4}})
    follower = watch.Watch()
    seen = []
    for event in follower.stream(
        apps.list_namespaced_deployment,
        NAMESPACE,
        resource_version=listing.metadata.resource_version,
    ):
        deployment = event["object"]
        seen.append(
            (event["type"], deployment.spec.replicas, int(deployment.metadata.resource_version))
        )
        if deployment.status.available_replicas == 4:
            follower.stop()
    assert seen[0][:2] == ("MODIFIED", 4)
    assert [v for _, _, v in seen] == sorted({v for _, _, v in seen})


def test_watch_without_resource_version_starts_with_current_objects(
    kube: KubeCluster, apps: AppsV1Api
) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"])
    kube.fake.add_deployment(NAMESPACE, "worker", images=["worker:1"])
    follower = watch.Watch()
    stream = follower.stream(
        apps.list_namespaced_deployment, NAMESPACE, field_selector="metadata.name=worker"
    )
    first = next(stream)
    follower.stop()
    stream.close()
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "worker")


def test_changed_template_gets_a_new_replica_set_with_the_next_revision(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1", "api:2"], container_name="api")
    deployment = kube.fake.deployment(NAMESPACE, "api")
    replica_sets = kube.fake.replica_sets(NAMESPACE, "api")
    assert [rs["metadata"]["annotations"][REVISION] for rs in replica_sets] == ["1", "2"]
    assert all(rs["metadata"]["ownerReferences"][0]["controller"] for rs in replica_sets)
    assert {rs["metadata"]["ownerReferences"][0]["uid"] for rs in replica_sets} == {
        deployment["metadata"]["uid"]
    }
    assert [rs["spec"]["replicas"] for rs in replica_sets] == [0, 1]
    assert deployment["metadata"]["annotations"][REVISION] == "2"


def test_restoring_an_old_template_reuses_its_replica_set_and_renumbers_it(
    kube: KubeCluster,
) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1", "api:2"], container_name="api")
    containers = kube.fake.replica_sets(NAMESPACE, "api")[0]["spec"]["template"]["spec"][
        "containers"
    ]
    kube.fake.update_deployment(
        NAMESPACE, "api", {"spec": {"template": {"spec": {"containers": containers}}}}
    )
    kube.fake.settle(NAMESPACE, "api")
    replica_sets = kube.fake.replica_sets(NAMESPACE, "api")
    assert [(_images(rs), rs["metadata"]["annotations"][REVISION]) for rs in replica_sets] == [
        (["api:2"], "2"),
        (["api:1"], "3"),
    ]
    assert (
        replica_sets[1]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"]
        == "1"
    )


def test_blocked_replicas_never_become_ready(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"], replicas=2, container_name="api")
    kube.fake.block_ready(NAMESPACE, "api")
    kube.kubectl("set", "image", "deployment/api", "api=api:2", "-n", NAMESPACE)
    status = kube.fake.settle(NAMESPACE, "api")["status"]
    assert status["availableReplicas"] == 2
    assert status["updatedReplicas"] == 1
    assert status["replicas"] == 3
    assert kube.fake.replica_sets(NAMESPACE, "api")[-1]["status"].get("readyReplicas", 0) == 0


def test_replicas_are_not_ready_before_the_ready_delay(kube_clusters: ClusterFactory) -> None:
    cluster = kube_clusters(ready_delay=600.0)
    cluster.fake.add_deployment(NAMESPACE, "api", images=["api:1"], replicas=2)
    cluster.fake.update_deployment(NAMESPACE, "api", {"spec": {"replicas": 3}})
    status = cluster.fake.settle(NAMESPACE, "api")["status"]
    assert (status["replicas"], status["readyReplicas"]) == (3, 2)


def test_failing_rollout_reports_progress_deadline_exceeded(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"], container_name="api")
    kube.fake.fail_rollouts(NAMESPACE, "api")
    kube.kubectl("set", "image", "deployment/api", "api=api:2", "-n", NAMESPACE)
    conditions = kube.fake.settle(NAMESPACE, "api")["status"]["conditions"]
    progressing = next(c for c in conditions if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    result = kube.kubectl("rollout", "status", "deployment/api", "-n", NAMESPACE, "--timeout=10s")
    assert 'deployment "api" exceeded its progress deadline' in result.stderr


def test_paused_deployment_gets_no_new_replica_set(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"], container_name="api")
    kube.fake.pause(NAMESPACE, "api")
    kube.kubectl("set", "image", "deployment/api", "api=api:2", "-n", NAMESPACE)
    deployment = kube.fake.settle(NAMESPACE, "api")
    assert len(kube.fake.replica_sets(NAMESPACE, "api")) == 1
    assert deployment["status"]["conditions"][-1]["reason"] == "DeploymentPaused"


def test_kubectl_scale_goes_through_the_scale_subresource(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"], replicas=2)
    result = kube.kubectl("scale", "deployment/api", "--replicas=5", "-n", NAMESPACE)
    assert result.stdout.strip() == "deployment.apps/api scaled"
    assert kube.fake.settle(NAMESPACE, "api")["status"]["availableReplicas"] == 5


def test_stale_resource_version_is_a_conflict(kube: KubeCluster, apps: AppsV1Api) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=["api:1"])
    stale = apps.read_namespaced_deployment("api", NAMESPACE)
    apps.patch_namespaced_deployment_scale("api", NAMESPACE, {"spec": {"replicas": 2}})
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("api", NAMESPACE, stale)
    assert caught.value.status == 409


def test_history_beyond_the_limit_is_cleaned_up(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "api", images=[f"api:{n}" for n in range(1, 5)])
    kube.fake.update_deployment(NAMESPACE, "api", {"spec": {"revisionHistoryLimit": 1}})
    kube.fake.settle(NAMESPACE, "api")
    assert [_images(rs) for rs in kube.fake.replica_sets(NAMESPACE, "api")] == [
        ["api:3"],
        ["api:4"],
    ]


def test_unknown_resource_answers_a_not_found_status(kube: KubeCluster) -> None:
    response = httpx.get(f"{kube.fake.url}/apis/apps/v1/namespaces/x/deployments/missing")
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"


def test_stop_ends_open_watches() -> None:
    fake = FakeKubernetes(ready_delay=0).start()
    fake.add_deployment("ns", "api", images=["api:1"])
    first_event, ended = threading.Event(), threading.Event()

    def follow() -> None:
        url = f"{fake.url}/apis/apps/v1/deployments?watch=true"
        with httpx.stream("GET", url, timeout=30) as response:
            for _ in response.iter_lines():
                first_event.set()
        ended.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert first_event.wait(timeout=10)
    fake.stop()
    thread.join(timeout=10)
    assert ended.is_set()


def test_json_patch_replace_of_a_missing_path_is_refused() -> None:
    with pytest.raises(Exception, match="missing"):
        json_patch(
            {"metadata": {}}, [{"op": "replace", "path": "/metadata/annotations", "value": {}}]
        )


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    doc = {"containers": [{"name": "api", "image": "api:1"}, {"name": "proxy", "image": "envoy:1"}]}
    patch = {
        "$setElementOrder/containers": [{"name": "api"}, {"name": "proxy"}],
        "containers": [{"name": "api", "image": "api:2"}],
    }
    assert strategic_merge_patch(doc, patch) == {
        "containers": [{"name": "api", "image": "api:2"}, {"name": "proxy", "image": "envoy:1"}]
    }


def test_strategic_merge_patch_deletes_list_items_and_null_fields() -> None:
    doc = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "paused": True}
    patch = {"env": [{"name": "A", "$patch": "delete"}], "paused": None}
    assert strategic_merge_patch(doc, patch) == {"env": [{"name": "B", "value": "2"}]}


def test_kubeconfig_names_the_requested_context(tmp_path: Path) -> None:
    with FakeKubernetes() as fake:
        config = yaml.safe_load(
            fake.write_kubeconfig(tmp_path / "config", context="staging").read_text()
        )
    assert config["current-context"] == "staging"
    assert config["clusters"][0]["cluster"]["server"] == fake.url


def test_controller_revision_hash_is_fnv1_safe_encoded() -> None:
    # hash/fnv New32 is FNV-1 (not 1a): "a" -> 0x050c5d7e; SafeEncodeString maps each digit.
    assert fnv1_32(b"a") == 0x050C5D7E
    assert hash_controller_revision(b"a", None) == safe_encode(str(0x050C5D7E))
    assert safe_encode("0123456789") == "456789bcdf"


def test_kubectl_get_pods_shows_terminating_pods(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NAMESPACE, "worker", images=["voxflow/worker:v1"], replicas=1)
    kube.fake.terminate_delay = 3600.0
    kube.fake.update_deployment(NAMESPACE, "worker", {"spec": {"replicas": 0}})
    rows = []
    for _ in range(100):
        rows = kube.kubectl("get", "pods", "-n", NAMESPACE).stdout.splitlines()[1:]
        if rows and rows[0].split()[2] == "Terminating":
            break
    assert rows[0].split()[1:3] == ["1/1", "Terminating"]
