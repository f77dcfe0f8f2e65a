"""The Kubernetes side of the hold after a rollback whose Git change was proposed: ask the
workload's GitOps owner for one reconcile and tell when it has happened (`gitops`).

The owner is the one a `kubernetes.suspend_sync` step held, rebuilt from its stored spec
the way Resume sync rebuilds it (`KubernetesTarget.resume_sync`).
"""

from __future__ import annotations

from typing import Any

from actions.kubernetes import gitops
from actions.kubernetes.target import KubernetesTarget


def _held(target: KubernetesTarget, spec: dict[str, Any]) -> gitops.SuspendSync:
    return gitops.SuspendSync.rebuild(spec, api=target.apps.api_client)


def request_reconcile(target: KubernetesTarget, spec: dict[str, Any], *, token: str) -> bool:
    """Ask the owner a suspend step (`spec`) held to reconcile now; False if it cannot."""
    held = _held(target, spec)
    return gitops.request_reconcile(
        held.api, held.tool, namespace=held.namespace, name=held.owner, token=token
    )


def reconciled(
    target: KubernetesTarget, spec: dict[str, Any], *, token: str, revision: str
) -> str | None:
    """How that owner found live against Git, once reconciled at `revision` since it was
    asked with `token` (`Synced`, `OutOfSync`, `Ready`); None until then."""
    held = _held(target, spec)
    return gitops.reconciled(
        held.api,
        held.tool,
        namespace=held.namespace,
        name=held.owner,
        token=token,
        revision=revision,
    )
