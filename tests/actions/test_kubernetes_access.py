"""Least privilege: deploy/rbac.yaml suffices, a missing verb shows in the checks before approval.

The stand-in enforces the manifest for the bot's ServiceAccount token, as the
RBAC authorizer would; kubectl `auth can-i` (a SelfSubjectAccessReview) is the
reference for the answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from actions.base import PermanentError, StepContext
from actions.kubernetes import KubeConnection, KubernetesTarget
from actions.kubernetes.access import needs
from actions.kubernetes.images import pull_secret_need
from tests.fakes.kube_access import API, MANIFEST, NS, TOKEN, USER, cluster_as_bot, without

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube"]


def test_the_shipped_manifest_grants_everything_the_plan_uses(
    kube: KubeCluster, tmp_path: Path
) -> None:
    target = cluster_as_bot(kube, tmp_path, MANIFEST.read_text())
    checks = target.checks(None)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    plan = target.plan(None)
    ctx = StepContext.for_test(timeout=20.0)
    for step in plan.prepare + plan.rollback + plan.verify + plan.resume:
        step.run(ctx)
    image = kube.fake.deployment(NS, API)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "voxflow/api:v1"


def test_a_missing_verb_is_named_in_the_checks(kube: KubeCluster, tmp_path: Path) -> None:
    manifest = without(
        MANIFEST.read_text(),
        '  - apiGroups: ["apps"]\n    resources: ["deployments/scale"]\n    verbs: ["patch"]\n',
    )
    target = cluster_as_bot(kube, tmp_path, manifest)
    checks = {c.name: c for c in target.checks(None)}
    access = checks["permissions granted (SelfSubjectAccessReview)"]
    assert not access.ok
    assert access.detail == (
        "missing: patch deployments/scale.apps in voxflow-prod (see deploy/rbac.yaml)"
    )
    assert checks["undo accepted by the API server (dry run)"].ok
    # ... and it is exactly what would have failed mid-incident:
    stop = target.plan(None).prepare[-1]
    with pytest.raises(PermanentError, match='cannot patch resource "deployments/scale"'):
        stop.run(StepContext.for_test(timeout=5.0))


def test_dry_run_shows_a_refused_undo_and_changes_nothing(
    kube: KubeCluster, tmp_path: Path
) -> None:
    manifest = without(MANIFEST.read_text(), '    verbs: ["get", "list", "watch", "patch"]\n')
    manifest = manifest.replace(
        '    resources: ["deployments", "statefulsets", "daemonsets"]\n',
        '    resources: ["deployments", "statefulsets", "daemonsets"]\n'
        '    verbs: ["get", "list", "watch"]\n',
    )
    target = cluster_as_bot(kube, tmp_path, manifest)
    before = kube.fake.deployment(NS, API)
    checks = {c.name: c for c in target.checks(None)}
    dry_run = checks["undo accepted by the API server (dry run)"]
    assert not dry_run.ok and 'cannot patch resource "deployments"' in dry_run.detail
    assert kube.fake.deployment(NS, API) == before


def test_a_dry_run_that_passes_stores_nothing(kube: KubeCluster, tmp_path: Path) -> None:
    target = cluster_as_bot(kube, tmp_path, MANIFEST.read_text())
    before = kube.fake.deployment(NS, API)
    assert target.checks(None)[-1].ok
    after = kube.fake.deployment(NS, API)
    assert (after["metadata"]["generation"], after["spec"]) == (
        before["metadata"]["generation"],
        before["spec"],
    )


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (["patch", "deployments/scale"], "yes"),
        (["delete", "deployments"], "no"),
        (["patch", "applications.argoproj.io", "-n", "argocd"], "yes"),
        (["list", "secrets"], "yes"),
        (["get", "secrets"], "no"),
        (["get", "secrets/regcred"], "yes"),
        (["get", "secrets/db-password"], "no"),
    ],
)
def test_kubectl_auth_can_i_agrees(
    kube: KubeCluster, tmp_path: Path, args: list[str], answer: str
) -> None:
    kube.fake.enforce_rbac(MANIFEST.read_text(), token=TOKEN, user=USER)
    result = kube.kubectl("auth", "can-i", f"--as={USER}", "-n", NS, *args)
    assert result.stdout.strip() == answer, result.stderr


def test_the_manifest_grants_exactly_the_verbs_the_code_asks_for() -> None:
    granted: set[tuple[str, str, str, str, str]] = set()
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc["kind"] == "Role":
            for rule in doc["rules"]:
                granted |= {
                    (doc["metadata"]["namespace"], verb, group, resource, name)
                    for verb in rule["verbs"]
                    for group in rule["apiGroups"]
                    for resource in rule["resources"]
                    for name in rule.get("resourceNames") or [""]
                }
    owners = [("argocd", "argocd"), ("flux-kustomization", "flux-system")]
    owners += [("flux-helmrelease", "flux-system"), ("argocd-applicationset", "argocd")]
    used = {
        (
            n.namespace,
            n.verb,
            n.group,
            f"{n.resource}/{n.subresource}" if n.subresource else n.resource,
            n.name,
        )
        for workload in ("deployment", "statefulset", "daemonset")
        for n in [
            *needs(
                workload=workload,
                namespace=NS,
                workers=True,
                owners=owners,
                helm=True,
                forced_rollback=workload == "statefulset",
            ),
            pull_secret_need(NS, "regcred"),  # the image check's, for the example's secret
        ]
    }
    assert granted == used


def test_an_admission_refusal_shows_in_the_checks(kube: KubeCluster, tmp_path: Path) -> None:
    target = cluster_as_bot(kube, tmp_path, MANIFEST.read_text())

    def only_v2(resource: str, obj: dict[str, Any]) -> str | None:
        containers = obj["spec"]["template"]["spec"]["containers"]
        old = [c["image"] for c in containers if c["image"].endswith(":v1")]
        return f"image {old[0]} has a known CVE" if old and resource == "deployments" else None

    kube.fake.add_webhook("policy.voxflow.io", only_v2)
    checks = {c.name: c for c in target.checks(None)}
    dry_run = checks["undo accepted by the API server (dry run)"]
    assert not dry_run.ok
    assert dry_run.detail.endswith(
        'admission webhook "policy.voxflow.io" denied the request: '
        "image voxflow/api:v1 has a known CVE"
    )
    assert checks["permissions granted (SelfSubjectAccessReview)"].ok


def _reviews(kube: KubeCluster) -> int:
    return sum("selfsubjectaccessreviews" in r.path for r in kube.fake.api.writes)


def test_granted_verbs_are_reviewed_once_for_many_forms_and_a_refusal_every_time(
    kube: KubeCluster, tmp_path: Path
) -> None:
    """An incident storm opens many forms for one target: the grants are asked once a minute
    (per API server and identity), the refused verb on every form, so a fixed Role shows at
    once."""
    manifest = without(
        MANIFEST.read_text(),
        '  - apiGroups: ["apps"]\n    resources: ["deployments/scale"]\n    verbs: ["patch"]\n',
    )
    target = cluster_as_bot(kube, tmp_path, manifest)
    name = "permissions granted (SelfSubjectAccessReview)"
    first = {c.name: c for c in target.checks(None)}[name]
    asked = _reviews(kube)
    assert asked > 10  # one review per verb the plan uses
    again = {c.name: c for c in target.checks(None)}[name]
    assert _reviews(kube) == asked + 1  # only the refused verb was asked again
    assert again == first and not again.ok
    kube.fake.enforce_rbac(MANIFEST.read_text(), token=TOKEN, user=USER)  # the Role is fixed
    fixed = {c.name: c for c in target.checks(None)}[name]
    assert fixed.ok, fixed.detail
    assert _reviews(kube) == asked + 2


def test_a_grant_is_not_remembered_for_another_identity(kube: KubeCluster, tmp_path: Path) -> None:
    """Another token (another target's ServiceAccount) on the same API server asks again."""
    target = cluster_as_bot(kube, tmp_path, MANIFEST.read_text())
    assert all(c.ok for c in target.checks(None))
    asked = _reviews(kube)
    other = kube.fake.write_kubeconfig(tmp_path / "other", token="another-token")
    params = target.params.model_copy(
        update={"connection": KubeConnection(kubeconfig=str(other), context="sandbox")}
    )
    KubernetesTarget(params).checks(None)
    assert _reviews(kube) == 2 * asked  # every verb asked again, as the other identity
