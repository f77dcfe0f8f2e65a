"""The autoscalers on worker Deployments: KEDA ScaledObjects paused, HPAs accounted for.

A stopped worker must stay stopped. KEDA scales its target from zero as soon
as a trigger is active, so each ScaledObject whose scaleTargetRef is a worker
is paused with `autoscaling.keda.sh/paused-replicas: "0"` (KEDA docs,
"Pause autoscaling": scale to that count and stop autoscaling until the
annotation is removed) before the worker is scaled down, and its own earlier
pause annotations (`paused-replicas`, `paused`) are put back after the worker
is restarted. What they were is recorded twice before the change, in the
step's memory and as an annotation written in the same merge patch that
pauses it, so a crash anywhere leaves a record and a second pause never
records the bot's own "0" over the original.

A HorizontalPodAutoscaler needs no change: the HPA controller does nothing to
a target whose scale.spec.replicas is 0 when minReplicas is not 0 (kubernetes
pkg/controller/podautoscaler/horizontal.go reconcileAutoscaler,
"ScalingDisabled"), and takes over again from the restored count. One with
minReplicas 0 (the HPAScaleToZero feature) could scale the worker back up, so
planning refuses it.

The KEDA API (keda.sh/v1alpha1) may not be installed: a 404 on the list means
no ScaledObject.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes.client import ApiClient, AutoscalingV2Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from actions.base import ActionError, PermanentError, PlanningError
from actions.kubernetes.client import REQUEST_TIMEOUT, api_for, kube_errors, merge_patch_custom

KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
PAUSED = "autoscaling.keda.sh/paused"
RECORD = "rollback-bot/keda-pause-before"


@dataclass(frozen=True)
class Autoscaler:
    """A KEDA ScaledObject or an HPA whose target is a worker."""

    kind: str
    name: str
    worker: str
    annotations: dict[str, str]
    min_replicas: int | None = None

    @property
    def label(self) -> str:
        """kind/name, as kubectl names it."""
        return f"{self.kind.lower()}/{self.name}"


def _targets(spec: dict[str, Any], worker: str) -> bool:
    ref = spec.get("scaleTargetRef") or {}
    return bool(ref.get("name") == worker and ref.get("kind", "Deployment") == "Deployment")


def scaled_objects(api: ApiClient, *, namespace: str, workers: tuple[str, ...]) -> list[Autoscaler]:
    """List the KEDA ScaledObjects targeting any of `workers` (none if KEDA is not installed)."""
    group, version, plural = KEDA
    try:
        with kube_errors(f"listing KEDA ScaledObjects in {namespace}"):
            listing = api_for(CustomObjectsApi, api).list_namespaced_custom_object(
                group, version, namespace, plural, _request_timeout=REQUEST_TIMEOUT
            )
    except PermanentError as exc:
        if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
            return []
        raise
    found = []
    items: list[dict[str, Any]] = listing.get("items", []) if isinstance(listing, dict) else []
    for item in items:
        for worker in workers:
            if _targets(item.get("spec") or {}, worker):
                meta = item.get("metadata") or {}
                annotations = dict(meta.get("annotations") or {})
                found.append(Autoscaler("ScaledObject", meta.get("name", ""), worker, annotations))
    return found


def hpas(api: ApiClient, *, namespace: str, workers: tuple[str, ...]) -> list[Autoscaler]:
    """List the HorizontalPodAutoscalers targeting any of `workers`."""
    with kube_errors(f"listing HorizontalPodAutoscalers in {namespace}"):
        # Raw JSON: only the spec is needed, and the client's models insist on status fields.
        response = api_for(AutoscalingV2Api, api).list_namespaced_horizontal_pod_autoscaler(
            namespace, _request_timeout=REQUEST_TIMEOUT, _preload_content=False
        )
        listing = json.loads(cast(Any, response).data)
    found = []
    for item in listing.get("items") or []:
        spec = item.get("spec") or {}
        for worker in workers:
            if _targets(spec, worker):
                low = spec.get("minReplicas")
                found.append(
                    Autoscaler(
                        "HorizontalPodAutoscaler",
                        (item.get("metadata") or {}).get("name", ""),
                        worker,
                        {},
                        min_replicas=1 if low is None else int(low),
                    )
                )
    return found


def worker_notes(api: ApiClient, *, namespace: str, workers: tuple[str, ...]) -> list[str]:
    """Say which autoscalers act on the workers; refuse an HPA that scales from zero."""
    if not workers:
        return []
    try:
        keda = scaled_objects(api, namespace=namespace, workers=workers)
        scaling = hpas(api, namespace=namespace, workers=workers)
    except ActionError as exc:
        raise PlanningError(f"cannot list the workers' autoscalers: {exc}") from exc
    from_zero = [h for h in scaling if h.min_replicas == 0]
    if from_zero:
        names = ", ".join(f"{h.label} (deployment/{h.worker})" for h in from_zero)
        raise PlanningError(
            f"{names} has minReplicas 0, so it may scale the stopped worker up during the "
            "rollback; set minReplicas to 1 or more, or leave that worker out"
        )
    notes = [
        f"{k.label} autoscales deployment/{k.worker}: paused at 0 replicas while the workers "
        "are stopped, its own pause annotations put back after"
        for k in keda
    ]
    notes += [
        f"{h.label} autoscales deployment/{h.worker}: it does nothing while the worker has 0 "
        "replicas (ScalingDisabled) and takes over again once it is restarted"
        for h in scaling
    ]
    return notes


def _memory_key(namespace: str, name: str) -> str:
    return f"kubernetes/{namespace}/scaledobject/{name}/pause-before"


def _before(scaled: Autoscaler) -> dict[str, str | None]:
    return {key: scaled.annotations.get(key) for key in (PAUSED_REPLICAS, PAUSED)}


def _patch(api: ApiClient, *, namespace: str, name: str, annotations: dict[str, Any]) -> None:
    body = {"metadata": {"annotations": annotations}}
    what = f"scaledobject/{name} in {namespace}"
    merge_patch_custom(api, KEDA, namespace=namespace, name=name, body=body, what=what)


def pause(
    api: ApiClient, scaled: Autoscaler, *, namespace: str, memory: MutableMapping[str, Any]
) -> str:
    """Record the ScaledObject's pause annotations, then pause it at 0 replicas."""
    key = _memory_key(namespace, scaled.name)
    recorded = memory.get(key)
    if not isinstance(recorded, dict):
        text = scaled.annotations.get(RECORD)
        recorded = json.loads(text) if text else _before(scaled)
        memory[key] = recorded
    annotations = {PAUSED_REPLICAS: "0", RECORD: json.dumps(recorded, sort_keys=True)}
    _patch(api, namespace=namespace, name=scaled.name, annotations=annotations)
    return f"{scaled.label}: KEDA autoscaling paused at 0 replicas"


def resume(
    api: ApiClient, scaled: Autoscaler, *, namespace: str, memory: MutableMapping[str, Any]
) -> str:
    """Put the ScaledObject's own pause annotations back as recorded; say so if none is."""
    recorded = memory.get(_memory_key(namespace, scaled.name))
    if not isinstance(recorded, dict) and scaled.annotations.get(RECORD):
        recorded = json.loads(scaled.annotations[RECORD])
    if not isinstance(recorded, dict):
        return f"{scaled.label}: nothing recorded, left as it is"
    annotations: dict[str, Any] = {key: recorded.get(key) for key in (PAUSED_REPLICAS, PAUSED)}
    annotations[RECORD] = None
    _patch(api, namespace=namespace, name=scaled.name, annotations=annotations)
    state = "still paused, as before" if any(recorded.values()) else "KEDA autoscaling resumed"
    return f"{scaled.label}: {state}"
