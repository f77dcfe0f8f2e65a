"""The Kubernetes target's verdict evidence, on the stand-in cluster and a real registry.

The images live in Debian's docker-registry on a loopback port, pushed there by
the session's private dockerd (tests/fakes/dockerd.py); the stand-in cluster
serves the Deployment, its ReplicaSets, the pull secret, the Argo CD
Application and the RBAC the bot runs with.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

from actions.base import Finding, Level
from actions.kubernetes import KubeConnection, KubernetesParams, KubernetesTarget
from tests.fakes.docker_apps import push
from tests.fakes.kube_access import (
    MANIFEST,
    TOKEN,
    USER,
    cluster_as_bot,
    without,
)
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.dockerd"]

NS = "voxflow-prod"
API = "voxflow-api"
WORKER = "voxflow-worker"


def target(kube: KubeCluster) -> KubernetesTarget:
    return KubernetesTarget(
        KubernetesParams(kind="kubernetes", namespace=NS, deployment=API),
        api=kube.api,
    )


def by_level(findings: list[Finding], level: Level) -> list[str]:
    return [f.text for f in findings if f.level == level]


def test_a_paused_deployment_blocks(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=["127.0.0.1:9/a:v1", "127.0.0.1:9/a:v2"])
    kube.fake.pause(NS, API)
    findings = target(kube).evidence(None)
    blocked = by_level(findings, Level.BLOCKED)
    assert any(t.startswith("deployment not paused fails:") for t in blocked), findings


def test_an_image_gone_from_the_registry_blocks_and_one_still_there_is_ok(
    kube: KubeCluster, dockerd: Engine, registry: Registry
) -> None:
    push(dockerd, registry, "v31")
    repo = f"{registry.address}/rbt-app"
    kube.fake.add_deployment(NS, API, images=[f"{repo}:v404", f"{repo}:v31", f"{repo}:v32"])
    gone = target(kube).evidence("1")
    assert by_level(gone, Level.BLOCKED) == [
        f"image cannot be pulled: {repo}:v404 is not in {registry.address} (manifest unknown)"
    ]
    there = target(kube).evidence("2")
    assert f"image {repo}:v31 is pullable" in by_level(there, Level.OK)
    assert not by_level(there, Level.BLOCKED)


def test_the_revisions_pull_secret_is_used_and_named(
    kube: KubeCluster, dockerd: Engine, registry: Registry
) -> None:
    push(dockerd, registry, "v33")
    repo = f"{registry.address}/rbt-app"
    auth = base64.b64encode(b"ci-bot:pull-s3cret").decode()
    config = json.dumps({"auths": {registry.address: {"auth": auth}}}).encode()
    kube.fake.store.create(
        "secrets",
        {
            "metadata": {"name": "regcred", "namespace": NS},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(config).decode()},
        },
    )
    kube.fake.add_deployment(NS, API, images=[f"{repo}:v33"])
    secret = {"spec": {"template": {"spec": {"imagePullSecrets": [{"name": "regcred"}]}}}}
    kube.fake.update_deployment(NS, API, secret)  # revision 2: v33 pulled with regcred
    wait_for(lambda: len(kube.apps.list_namespaced_replica_set(NS).items) == 2, what="rev 2")
    kube.fake.update_deployment(
        NS, API, {"spec": {"template": {"spec": {"containers": [{"name": API, "image": "x:v9"}]}}}}
    )
    findings = target(kube).evidence("2")
    assert f"image {repo}:v33 is pullable (pull secret regcred)" in by_level(findings, Level.OK)
    assert "pull-s3cret" not in json.dumps([f.text for f in findings])


def test_an_unreachable_registry_is_risky_not_safe(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=["127.0.0.1:9/app:v1", "127.0.0.1:9/app:v2"])
    risky = by_level(target(kube).evidence(None), Level.RISKY)
    assert len(risky) == 1 and risky[0].startswith(
        "image 127.0.0.1:9/app:v1 not verified: cannot reach 127.0.0.1:9"
    )


def test_images_are_not_asked_for_where_verify_images_is_off_and_the_verdict_says_so(
    kube: KubeCluster,
) -> None:
    kube.fake.add_deployment(NS, API, images=["127.0.0.1:9/app:v1", "127.0.0.1:9/app:v2"])
    params = KubernetesParams(kind="kubernetes", namespace=NS, deployment=API, verify_images=False)
    findings = KubernetesTarget(params, api=kube.api).evidence(None)
    assert not by_level(findings, Level.RISKY) and not by_level(findings, Level.BLOCKED)
    assert "images not checked in their registries (verify_images: false)" in by_level(
        findings, Level.OK
    )


def test_a_gitops_owned_workload_is_risky_naming_its_owner(
    kube: KubeCluster, tmp_path: Path
) -> None:
    bot = cluster_as_bot(kube, tmp_path, MANIFEST.read_text())
    risky = by_level(bot.evidence(None), Level.RISKY)
    assert any(
        t.startswith("Argo CD application vf in argocd owns deployment/voxflow-api")
        and "syncs automatically" in t
        for t in risky
    ), risky
    assert not by_level(bot.evidence(None), Level.BLOCKED)


def test_a_missing_permission_blocks(kube: KubeCluster, tmp_path: Path) -> None:
    manifest = without(
        MANIFEST.read_text(),
        '  - apiGroups: ["apps"]\n    resources: ["deployments/scale"]\n    verbs: ["patch"]\n',
    )
    bot = cluster_as_bot(kube, tmp_path, manifest)
    assert by_level(bot.evidence(None), Level.BLOCKED) == [
        "permissions granted (SelfSubjectAccessReview) fails: missing: patch "
        "deployments/scale.apps in voxflow-prod (see deploy/rbac.yaml)"
    ]


def test_a_refused_dry_run_blocks(kube: KubeCluster, tmp_path: Path) -> None:
    manifest = without(MANIFEST.read_text(), '    verbs: ["get", "list", "watch", "patch"]\n')
    manifest = manifest.replace(
        '    resources: ["deployments", "statefulsets", "daemonsets"]\n',
        '    resources: ["deployments", "statefulsets", "daemonsets"]\n'
        '    verbs: ["get", "list", "watch"]\n',
    )
    blocked = by_level(cluster_as_bot(kube, tmp_path, manifest).evidence(None), Level.BLOCKED)
    assert any(t.startswith("undo accepted by the API server (dry run) fails:") for t in blocked)


def test_worker_autoscalers_are_named_and_one_scaling_from_zero_blocks(
    kube: KubeCluster, tmp_path: Path
) -> None:
    bot = cluster_as_bot(kube, tmp_path, MANIFEST.read_text())
    ok = by_level(bot.evidence(None), Level.OK)
    assert any(t.startswith("scaledobject/q autoscales deployment/voxflow-worker") for t in ok)
    kube.fake.store.create(
        "horizontalpodautoscalers",
        {
            "metadata": {"name": "worker-cpu", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER},
                "minReplicas": 0,
                "maxReplicas": 5,
            },
        },
    )
    blocked = by_level(bot.evidence(None), Level.BLOCKED)
    assert blocked == [
        "horizontalpodautoscaler/worker-cpu (deployment/voxflow-worker) has minReplicas 0, so it "
        "may scale the stopped worker up during the rollback; set minReplicas to 1 or more, or "
        "leave that worker out"
    ]


def test_the_current_revision_or_a_missing_one_blocks(kube: KubeCluster) -> None:
    kube.fake.add_deployment(NS, API, images=["127.0.0.1:9/a:v1", "127.0.0.1:9/a:v2"])
    current = by_level(target(kube).evidence("2"), Level.BLOCKED)
    assert current[0] == (
        "rollback revision exists fails: revision 2 is what the deployment already runs"
    )
    missing = by_level(target(kube).evidence("7"), Level.BLOCKED)
    assert missing[0] == (
        "rollback revision exists fails: unable to find specified revision 7 in history"
    )


def test_as_the_bot_the_named_pull_secret_is_read_and_another_is_named_as_missing(
    kube: KubeCluster, dockerd: Engine, registry: Registry, tmp_path: Path
) -> None:
    """deploy/rbac.yaml grants get on the pull secrets it names, and no other Secret."""
    push(dockerd, registry, "v34")
    repo = f"{registry.address}/rbt-app"
    auth = base64.b64encode(b"ci-bot:pull-s3cret").decode()
    config = json.dumps({"auths": {registry.address: {"auth": auth}}}).encode()
    for name in ("regcred", "other-cred"):
        kube.fake.store.create(
            "secrets",
            {
                "metadata": {"name": name, "namespace": NS},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(config).decode()},
            },
        )
    kube.fake.add_deployment(NS, API, images=[f"{repo}:v34"])
    pull = [{"name": "other-cred"}, {"name": "regcred"}]
    kube.fake.update_deployment(
        NS, API, {"spec": {"template": {"spec": {"imagePullSecrets": pull}}}}
    )
    wait_for(lambda: len(kube.apps.list_namespaced_replica_set(NS).items) == 2, what="rev 2")
    kube.fake.update_deployment(
        NS, API, {"spec": {"template": {"spec": {"containers": [{"name": API, "image": "x:v9"}]}}}}
    )
    kube.fake.enforce_rbac(MANIFEST.read_text(), token=TOKEN, user=USER)
    kubeconfig = kube.fake.write_kubeconfig(tmp_path / "bot-kubeconfig", token=TOKEN)
    connection = KubeConnection(kubeconfig=str(kubeconfig), context="sandbox")
    params = KubernetesParams(
        kind="kubernetes", namespace=NS, deployment=API, connection=connection
    )
    findings = KubernetesTarget(params).evidence("2")
    assert f"image {repo}:v34 is pullable (pull secret regcred)" in by_level(findings, Level.OK)
    [risky] = [t for t in by_level(findings, Level.RISKY) if "pull secret" in t]
    assert risky.startswith("pull secret other-cred could not be read: ")
    assert 'cannot get resource "secrets"' in risky
    assert risky.endswith(
        'the bot needs get secrets "other-cred" in voxflow-prod (see deploy/rbac.yaml)'
    )
    assert not by_level(findings, Level.BLOCKED)
