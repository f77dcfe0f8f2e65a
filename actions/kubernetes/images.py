"""Whether the images of the revision to restore can still be pulled, with the pull secrets.

The kubelet pulls with the pod's `imagePullSecrets` (Secrets of type
`kubernetes.io/dockerconfigjson`, the key `.dockerconfigjson` holding a Docker
config's `auths`; kubernetes pkg/credentialprovider/secrets/secrets.go
MakeDockerKeyring). So the check reads the same secrets from the revision's pod
template and asks each image's registry for its manifest (actions.registry).
A secret the bot may not read is said so, with the permission it lacks (get
on that Secret by name: deploy/rbac.yaml grants it with resourceNames, so the
bot reads no other Secret): the answer is then what the registry tells an
anonymous client. That finding is risky, never blocking: an unreadable pull
secret does not make a rollback unsafe, only its images unverified.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from actions.base import ActionError, Finding, Level, PermanentError
from actions.kubernetes.access import Need
from actions.kubernetes.client import REQUEST_TIMEOUT, kube_errors
from actions.registry import Pullable, Reference, check_manifest, credentials


def pull_secret_names(template: dict[str, Any]) -> list[str]:
    """The imagePullSecrets of a pod template, as wire JSON or the client's snake_case."""
    spec = template.get("spec") or {}
    entries = spec.get("imagePullSecrets") or spec.get("image_pull_secrets") or []
    return [str(e.get("name")) for e in entries if isinstance(e, dict) and e.get("name")]


def pull_secret_need(namespace: str, name: str) -> Need:
    """The permission reading one pull secret takes: get, on that Secret only."""
    return Need("get", "", "secrets", namespace, name=name)


def _auths(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        with kube_errors(f"reading pull secret {name} in {namespace}"):
            secret = CoreV1Api(api).read_namespaced_secret(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
    except ActionError as exc:
        refused = isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 403
        if not refused:
            raise
        need = pull_secret_need(namespace, name)
        raise PermanentError(f"{exc}; the bot needs {need} (see deploy/rbac.yaml)") from exc
    data = secret.data or {}
    raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
    if not raw:
        return {}
    document = json.loads(base64.b64decode(raw))
    auths = document.get("auths", document) if isinstance(document, dict) else {}
    return dict(auths) if isinstance(auths, dict) else {}


def image_findings(
    api: ApiClient, *, namespace: str, images: tuple[str, ...], secrets: list[str]
) -> list[Finding]:
    """One finding per image: pullable (ok), gone or refused (blocked), not verified (risky)."""
    findings: list[Finding] = []
    keyrings: list[tuple[str, dict[str, Any]]] = []
    for name in secrets:
        try:
            keyrings.append((name, _auths(api, namespace, name)))
        except (ActionError, ValueError) as exc:
            findings.append(
                Finding(
                    Level.RISKY,
                    f"pull secret {name} could not be read: {exc}",
                    basis=f"pull secret {name} unreadable",
                )
            )
    for image in images:
        registry = Reference.parse(image).registry
        found = next(
            (
                (name, auth)
                for name, auths in keyrings
                if (auth := credentials(auths, registry)) is not None
            ),
            None,
        )
        answer = check_manifest(image, auth=found[1] if found else None)
        via = f" (pull secret {found[0]})" if found else ""
        if answer.pullable == Pullable.YES:
            findings.append(
                Finding(Level.OK, f"image {image} is pullable{via}", f"{image} pullable")
            )
        elif answer.pullable == Pullable.NO:
            findings.append(
                Finding(
                    Level.BLOCKED,
                    f"image cannot be pulled: {answer.detail}{via}",
                    f"{image} not pullable",
                )
            )
        else:
            findings.append(
                Finding(
                    Level.RISKY,
                    f"image {image} not verified: {answer.detail}{via}",
                    f"{image} not verified",
                )
            )
    return findings
