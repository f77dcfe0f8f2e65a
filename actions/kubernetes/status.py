"""Rollout status, as `kubectl rollout status` judges it, driven by a watch.

Rollout status follows kubectl's order of checks (kubectl
pkg/polymorphichelpers/rollout_status.go, DeploymentStatusViewer: observed
generation, progress deadline, updated, old pending, available) and is driven
by a watch on the one Deployment, re-listed when the watch ends, never by
sleeping.

One rule is deliberately better than kubectl's. After a rollout that exceeded
its progress deadline, the deployment controller keeps the old
`Progressing=False, ProgressDeadlineExceeded` condition, message included,
with observedGeneration already current, until it sees progress
(kubernetes pkg/controller/deployment/progress.go syncRolloutStatus;
util/deployment_util.go DeploymentTimedOut returns true for a condition that
already timed out, and SetDeploymentCondition keeps one of the same reason).
Right after a rollback that condition still names the bad ReplicaSet, and
kubectl fails on it although the rollback is fine. The condition's message
names its ReplicaSet (`ReplicaSet "x" has timed out progressing.`), so a
timed-out condition naming a ReplicaSet other than the one running the
Deployment's template now is stale: it is reported once and ignored; one that
names the current ReplicaSet (or none) belongs to this rollout and fails it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Generator
from typing import Any

import urllib3
from kubernetes.client import AppsV1Api, V1Deployment, V1DeploymentStatus
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
from actions.kubernetes.client import REQUEST_TIMEOUT, api_error, kube_errors, object_meta
from actions.kubernetes.rollout import current_replica_set, read_with_replica_sets

TIMED_OUT = "ProgressDeadlineExceeded"
SPEAK_EVERY = 15.0
"""A wait says where it stands at least this often, even when nothing changed: a watch
segment lasts at most this long (the API server ends a watch after its `timeoutSeconds`,
apiserver pkg/endpoints/handlers/watch.go), and the object is listed again."""
_NAMED = re.compile(r'^ReplicaSet "(?P<name>[^"]+)" has timed out progressing')


def timed_out_replica_set(deployment: V1Deployment) -> str | None:
    """Return the ReplicaSet a ProgressDeadlineExceeded condition names ("" if none); else None."""
    status = deployment.status or V1DeploymentStatus()
    progressing = next((c for c in status.conditions or [] if c.type == "Progressing"), None)
    if progressing is None or progressing.reason != TIMED_OUT:
        return None
    match = _NAMED.match(progressing.message or "")
    return match["name"] if match else ""


def rollout_verdict(deployment: V1Deployment, *, stale_ok: bool = False) -> tuple[str, bool]:
    """Judge a rollout in kubectl's order; return a progress line and whether it is done.

    `stale_ok`: the caller found that the timed-out condition names another
    ReplicaSet than the current one, so it does not fail this rollout.
    """
    name = object_meta(deployment).name
    status = deployment.status or V1DeploymentStatus()
    if (object_meta(deployment).generation or 0) > (status.observed_generation or 0):
        return "waiting for the controller to observe the new template", False
    if timed_out_replica_set(deployment) is not None and not stale_ok:
        raise PermanentError(f'deployment "{name}" exceeded its progress deadline')
    desired = deployment.spec.replicas if deployment.spec else None
    updated, total = status.updated_replicas or 0, status.replicas or 0
    available = status.available_replicas or 0
    if desired is not None and updated < desired:
        return f"{updated} of {desired} new replicas updated", False
    if total > updated:
        return f"{total - updated} old replicas pending termination", False
    if available < updated:
        return f"{available} of {updated} new replicas available", False
    return f'deployment "{name}" successfully rolled out', True


def follow(
    lister: Callable[..., Any],
    *,
    namespace: str,
    name: str,
    kind: str,
    remaining: Callable[[], float],
    every: float | None = None,
) -> Generator[Any, None, None]:
    """Yield one object (listed by `lister`, e.g. list_namespaced_deployment) after each change;
    with `every`, also listed again at least that often when nothing changes."""
    selector = f"metadata.name={name}"
    segment = remaining if every is None else (lambda: min(remaining(), every))
    while remaining() > 0:
        with kube_errors():
            listing = lister(namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT)
        if not listing.items:
            raise PermanentError(f'Error from server (NotFound): {kind}s.apps "{name}" not found')
        yield listing.items[0]
        version = listing.metadata.resource_version if listing.metadata else None
        ended_cleanly = yield from _follow(
            lister,
            namespace=namespace,
            selector=selector,
            version=version,
            kind=kind,
            remaining=segment,
        )
        if not ended_cleanly:
            time.sleep(min(1.0, remaining()))  # back off before listing again after a broken watch


def _follow(
    lister: Callable[..., Any],
    *,
    namespace: str,
    selector: str,
    version: str | None,
    kind: str,
    remaining: Callable[[], float],
) -> Generator[Any, None, bool]:
    """Yield each change after `version`; return False if the watch broke rather than ended."""
    watch = Watch()
    stream = watch.stream(
        lister,
        namespace,
        field_selector=selector,
        resource_version=version,
        timeout_seconds=max(1, math.ceil(remaining())),
        _request_timeout=(REQUEST_TIMEOUT, max(0.1, remaining())),
    )
    try:
        for event in stream:
            if not isinstance(event, dict):
                continue  # a line the client could not decode
            if event["type"] == "DELETED":
                raise PermanentError(f"{kind}/{object_meta(event['object']).name} was deleted")
            yield event["object"]
            if remaining() <= 0:
                return True
    except ApiException as exc:
        if exc.status != 410:
            raise api_error(exc, None) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError):
        return remaining() <= 0
    finally:
        watch.stop()
        stream.close()
    return True


class RolloutStatus(Step):
    """Wait for a Deployment's rollout to complete, as `kubectl rollout status`."""

    name: str = fixed("kubernetes.rollout_status")
    idempotent: bool = fixed(True)
    timeout: float = 300.0
    apps: AppsV1Api = given()
    namespace: str
    deployment: str

    def describe(self) -> str:
        """Name the Deployment and the longest wait."""
        return (
            f"Wait for deployment/{self.deployment} in {self.namespace} to finish rolling out "
            f"(up to {self.timeout:g}s)"
        )

    def label(self) -> str:
        """`Wait for voxflow-api to finish rolling out`."""
        return f"Wait for {self.deployment} to finish rolling out"

    def run(self, ctx: StepContext) -> StepResult:
        """Follow the Deployment until complete; fail on its own progress deadline or ours."""
        lines: list[str] = []
        watched = follow(
            self.apps.list_namespaced_deployment,
            namespace=self.namespace,
            name=self.deployment,
            kind="deployment",
            remaining=ctx.remaining,
            every=SPEAK_EVERY,
        )
        started = spoke = time.monotonic()
        try:
            for deployment in watched:
                stale = self._stale_deadline(deployment)
                if stale is not None and f"ignoring {stale}" not in lines:
                    lines.append(f"ignoring {stale}")
                    ctx.emit(lines[-1])
                message, done = rollout_verdict(deployment, stale_ok=stale is not None)
                now = time.monotonic()
                if not lines or lines[-1] != message:
                    lines.append(message)
                    ctx.emit(message)
                    spoke = now
                elif now - spoke >= SPEAK_EVERY * 0.9 and not done:
                    # Nothing changed: say so, with how long it has been, so the progress
                    # line never sits silent through a long wait.
                    ctx.emit(f"{message} (still waiting, {now - started:.0f} s)")
                    spoke = now
                if done:
                    return StepResult(summary=message, output="\n".join(lines))
                if ctx.remaining() <= 0:
                    break
        finally:
            watched.close()
        last = lines[-1] if lines else "no status seen"
        raise PermanentError(
            f"timed out waiting for deployment/{self.deployment} in {self.namespace} to roll out "
            f"(last: {last})"
        )

    def _stale_deadline(self, deployment: V1Deployment) -> str | None:
        """Describe a timed-out condition left from another ReplicaSet's rollout, else None."""
        status = deployment.status or V1DeploymentStatus()
        if (object_meta(deployment).generation or 0) > (status.observed_generation or 0):
            return None
        named = timed_out_replica_set(deployment)
        if not named:
            return None
        _, owned = read_with_replica_sets(self.apps, namespace=self.namespace, name=self.deployment)
        current = current_replica_set(deployment, owned)
        current_name = object_meta(current).name if current is not None else None
        if current_name is None or current_name == named:
            return None
        return (
            f'the stale progress deadline of ReplicaSet "{named}"; this rollout is '
            f'ReplicaSet "{current_name}"'
        )
