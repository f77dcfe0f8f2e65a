"""Least privilege, checked before approval: each verb the plan needs, and the undo dry-run.

An RBAC or admission refusal in the middle of an incident is the worst time
to learn about it. So the checks ask the API server, as the bot's own
identity, a SelfSubjectAccessReview (authorization.k8s.io/v1, open to every
authenticated user through the default ClusterRole system:basic-user) for
each (verb, group, resource, namespace) the plan will use, and send the undo
patch itself with dryRun=All, which runs authorization, admission (webhooks
and policies included) and validation without storing anything. The verbs
listed here are the ones deploy/rbac.yaml grants; a test keeps both and the
code in step.

A permission found granted is remembered for `GRANTED_FOR` seconds per API
server and identity (`Grants`): an incident storm opens many forms for the
same target, and each would otherwise send the same dozen reviews. A refusal is
never remembered, so a fixed Role shows on the next form; a grant revoked
within the minute shows as the step's own 403 when it runs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from kubernetes.client import (
    ApiClient,
    AuthorizationV1Api,
    V1ResourceAttributes,
    V1SelfSubjectAccessReview,
    V1SelfSubjectAccessReviewSpec,
)

from actions.base import ActionError, Check
from actions.kubernetes.client import REQUEST_TIMEOUT, kube_errors

PLURALS = {"deployment": "deployments", "statefulset": "statefulsets", "daemonset": "daemonsets"}


@dataclass(frozen=True)
class Need:
    """One permission the plan uses."""

    verb: str
    group: str
    resource: str
    namespace: str
    subresource: str = ""
    name: str = ""
    """One object only (a rule's resourceNames), or any."""

    def __str__(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        qualified = f"{resource}.{self.group}" if self.group else resource
        named = f' "{self.name}"' if self.name else ""
        return f"{self.verb} {qualified}{named} in {self.namespace}"


def needs(
    *,
    workload: str,
    namespace: str,
    workers: bool,
    owners: list[tuple[str, str]],
    helm: bool,
    forced_rollback: bool = False,
) -> list[Need]:
    """The permissions a plan uses: workload, revisions, workers, autoscalers, GitOps owners.

    `owners` are (tool, namespace) of Argo CD / Flux objects whose sync is suspended.
    """
    plural = PLURALS[workload]
    found = [Need(verb, "apps", plural, namespace) for verb in ("get", "list", "watch", "patch")]
    revisions = "replicasets" if workload == "deployment" else "controllerrevisions"
    found.append(Need("list", "apps", revisions, namespace))
    if workload == "deployment":  # is it an Argo Rollouts workloadRef? (rollouts.py)
        found.append(Need("list", "argoproj.io", "rollouts", namespace))
    if workers:
        found += [
            Need("get", "apps", "deployments", namespace),
            Need("patch", "apps", "deployments", namespace),
            Need("patch", "apps", "deployments", namespace, "scale"),
            Need("list", "", "pods", namespace),
            Need("watch", "", "pods", namespace),
            Need("list", "autoscaling", "horizontalpodautoscalers", namespace),
            Need("list", "keda.sh", "scaledobjects", namespace),
            Need("patch", "keda.sh", "scaledobjects", namespace),
        ]
    resources = {
        "argocd": ("argoproj.io", "applications"),
        "argocd-applicationset": ("argoproj.io", "applicationsets"),
        "flux-kustomization": ("kustomize.toolkit.fluxcd.io", "kustomizations"),
        "flux-helmrelease": ("helm.toolkit.fluxcd.io", "helmreleases"),
    }
    for tool, owner_namespace in owners:
        group, resource = resources[tool]
        found += [Need(v, group, resource, owner_namespace) for v in ("get", "patch")]
    if helm:
        found.append(Need("list", "", "secrets", namespace))
    if forced_rollback:  # an OrderedReady StatefulSet's stuck pods (forced.py)
        found += [Need("list", "", "pods", namespace), Need("delete", "", "pods", namespace)]
    unique: dict[Need, None] = dict.fromkeys(found)
    return list(unique)


GRANTED_FOR = 60.0


class Grants:
    """Permissions the API server granted lately, by server, identity and need."""

    def __init__(self, seconds: float = GRANTED_FOR) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._until: dict[tuple[str, Need], float] = {}

    def granted(self, who: str, need: Need) -> bool:
        with self._lock:
            return self._until.get((who, need), 0.0) > time.monotonic()

    def grant(self, who: str, need: Need) -> None:
        with self._lock:
            self._until[(who, need)] = time.monotonic() + self.seconds

    def clear(self) -> None:
        with self._lock:
            self._until.clear()


GRANTS = Grants()


def identity(api: ApiClient) -> str:
    """The API server and the credentials a client speaks with (hashed, never kept)."""
    config = api.configuration
    secret = repr(
        (sorted((config.api_key or {}).items()), config.cert_file, config.username, config.host)
    )
    return hashlib.sha256(secret.encode()).hexdigest()


def allowed(api: ApiClient, need: Need) -> bool:
    """Ask the API server whether the bot's identity may do `need` (SelfSubjectAccessReview)."""
    review = V1SelfSubjectAccessReview(
        spec=V1SelfSubjectAccessReviewSpec(
            resource_attributes=V1ResourceAttributes(
                verb=need.verb,
                group=need.group,
                resource=need.resource,
                subresource=need.subresource or None,
                namespace=need.namespace,
                name=need.name or None,
            )
        )
    )
    with kube_errors("SelfSubjectAccessReview"):
        answer = AuthorizationV1Api(api).create_self_subject_access_review(
            review, _request_timeout=REQUEST_TIMEOUT
        )
    return bool(answer.status and answer.status.allowed)


def access_check(api: ApiClient, wanted: list[Need]) -> Check:
    """One check: every permission the plan needs is granted, or the missing ones named."""
    name = "permissions granted (SelfSubjectAccessReview)"
    who = identity(api)
    try:
        missing = []
        for need in wanted:
            if GRANTS.granted(who, need):
                continue
            if allowed(api, need):
                GRANTS.grant(who, need)
            else:
                missing.append(need)
    except ActionError as exc:
        return Check(name, False, f"cannot ask the API server: {exc}")
    if missing:
        listed = "; ".join(str(n) for n in missing)
        return Check(name, False, f"missing: {listed} (see deploy/rbac.yaml)")
    return Check(name, True, f"all {len(wanted)} verbs the plan uses are granted")
