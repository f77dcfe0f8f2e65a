"""The Kubernetes manifests an operator deploys the bot with (the image: test_image.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml

from tests.fakes.parts import require
from tests.ops.discovery import Discovery

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
OURS = ["namespace", "configmap", "deployment", "service", "pdb"]
MODELS = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "ConfigMap": "V1ConfigMap",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
}


def _unknown_fields(value: Any, model: str, where: str) -> list[str]:
    """Fields the Kubernetes API (as generated into the official client) does not have."""
    if model.lower().startswith("list["):  # "list[V1Container]" or "List[V1Container]"
        inner = model[5:-1]
        return [p for i, item in enumerate(value) for p in _unknown_fields(item, inner, where)]
    if model.lower().startswith("dict") or not hasattr(kubernetes.client, model):
        return []
    cls = getattr(kubernetes.client, model)
    by_json = {json_name: name for name, json_name in cls.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{where}.{key}")
            continue
        problems += _unknown_fields(item, cls.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


def _manifests() -> list[dict[str, Any]]:
    return [yaml.safe_load((DEPLOY / f"{name}.yaml").read_text()) for name in OURS]


def test_every_manifest_uses_only_fields_the_kubernetes_api_has() -> None:
    for manifest in _manifests():
        assert _unknown_fields(manifest, MODELS[manifest["kind"]], manifest["kind"]) == []


def test_the_field_check_catches_a_misspelt_field() -> None:
    deployment = yaml.safe_load((DEPLOY / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    problems = _unknown_fields(deployment, "V1Deployment", "Deployment")
    assert problems == ["Deployment.spec.template.spec.containers.readinesProbe"]


def test_kubectl_client_dry_run_accepts_every_manifest() -> None:
    kubectl = require("kubectl", package="kubectl (1.32)")
    with Discovery() as api:
        for name in OURS:
            done = subprocess.run(
                [
                    kubectl,
                    f"--server={api.url}",
                    "apply",
                    "--dry-run=client",
                    "--validate=false",
                    "-f",
                    str(DEPLOY / f"{name}.yaml"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip().endswith("created (dry run)"), done.stdout


def test_the_deployment_runs_two_probed_non_root_replicas_with_a_disruption_budget() -> None:
    by_kind = {m["kind"]: m for m in _manifests()}
    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (bot,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    rbac = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
    (account,) = [doc for doc in rbac if doc["kind"] == "ServiceAccount"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert bot["envFrom"] == [{"secretRef": {"name": "rollback-bot-secrets"}}]
    (config,) = [v for v in pod["volumes"] if "configMap" in v]
    assert config["configMap"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    shutdown = int(next(e["value"] for e in bot["env"] if e["name"] == "SHUTDOWN_SECONDS"))
    assert pod["terminationGracePeriodSeconds"] > 2 * shutdown  # HTTP drain, then the step
    selector = by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert by_kind["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert by_kind["Service"]["spec"]["selector"] == selector


def test_kustomization_builds_every_manifest_with_rbac_in_its_own_namespaces() -> None:
    kubectl = require("kubectl", package="kubectl (1.32)")
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted([f"{n}.yaml" for n in OURS] + ["rbac.yaml"])
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert {doc["kind"] for doc in docs} >= set(MODELS)
    accounts = [doc for doc in docs if doc["kind"] == "ServiceAccount"]
    assert [(a["metadata"]["name"], a["metadata"]["namespace"]) for a in accounts] == [
        ("rollback-bot", "rollback-bot")
    ]
    pod = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rollback-bot"
    # The Roles stay where the workloads are: a kustomization-wide namespace would move them.
    bindings = {doc["metadata"]["namespace"] for doc in docs if doc["kind"] == "RoleBinding"}
    assert "voxflow-prod" in bindings and "rollback-bot" not in bindings
