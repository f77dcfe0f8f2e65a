"""apps/v1 objects as the API server shapes them: defaults, selectors, errors, times, hashes.

Everything here is a pure function on plain JSON dicts, so the server, the
controller and the tests share one notion of what a stored Deployment looks
like. Defaults are those the real API server applies on every write; applying
them again is a no-op, which keeps objects written by kubectl (Go encodes the
template with every field) and by the Python client (which omits empty ones)
identical once stored.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
# Annotations the deployment controller never copies from a Deployment to its ReplicaSets.
SKIP_COPY = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, ROLLBACK_TO}
)


@dataclass(frozen=True)
class Kind:
    """One served resource: its plural name, kind, group and version, and its subresources."""

    resource: str
    kind: str
    singular: str
    short: str
    group: str = "apps"
    version: str = "v1"
    subresources: tuple[str, ...] = ("status", "scale")
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """apiVersion as objects carry it (v1, apps/v1, keda.sh/v1alpha1)."""
        return f"{self.group}/{self.version}" if self.group else self.version


# The workloads whose spec the stand-in validates and whose controller it runs.
KINDS = {
    "deployments": Kind("deployments", "Deployment", "deployment", "deploy"),
    "replicasets": Kind("replicasets", "ReplicaSet", "replicaset", "rs"),
    "statefulsets": Kind("statefulsets", "StatefulSet", "statefulset", "sts"),
    "daemonsets": Kind("daemonsets", "DaemonSet", "daemonset", "ds", subresources=("status",)),
}
# Every resource served, by plural name (plural names are unique across the groups used).
RESOURCES = {
    **KINDS,
    "pods": Kind("pods", "Pod", "pod", "po", group="", subresources=("status",)),
    "controllerrevisions": Kind(
        "controllerrevisions", "ControllerRevision", "controllerrevision", "", subresources=()
    ),
    "horizontalpodautoscalers": Kind(
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscaler",
        "hpa",
        group="autoscaling",
        version="v2",
        subresources=("status",),
    ),
    "secrets": Kind("secrets", "Secret", "secret", "", group="", subresources=()),
    "applications": Kind(
        "applications",
        "Application",
        "application",
        "app",
        group="argoproj.io",
        version="v1alpha1",
        subresources=(),
    ),
    # Argo CD's ApplicationSet CRD (argo-cd manifests/crds/applicationset-crd.yaml): group
    # argoproj.io, v1alpha1, plural applicationsets, short names appset and appsets.
    "applicationsets": Kind(
        "applicationsets",
        "ApplicationSet",
        "applicationset",
        "appset",
        group="argoproj.io",
        version="v1alpha1",
        subresources=("status",),
    ),
    # Argo Rollouts' CRD (argo-rollouts manifests/crds/rollout-crd.yaml): group argoproj.io,
    # v1alpha1, plural rollouts, short name ro, subresources status and scale. The scale
    # subresource (statusReplicasPath .status.HPAReplicas) is not served: nothing here scales
    # a Rollout, and views.scale_of follows apps/v1, not that path.
    "rollouts": Kind(
        "rollouts",
        "Rollout",
        "rollout",
        "ro",
        group="argoproj.io",
        version="v1alpha1",
        subresources=("status",),
    ),
    "kustomizations": Kind(
        "kustomizations",
        "Kustomization",
        "kustomization",
        "ks",
        group="kustomize.toolkit.fluxcd.io",
        version="v1",
        subresources=("status",),
    ),
    "helmreleases": Kind(
        "helmreleases",
        "HelmRelease",
        "helmrelease",
        "hr",
        group="helm.toolkit.fluxcd.io",
        version="v2",
        subresources=("status",),
    ),
    "selfsubjectaccessreviews": Kind(
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        "",
        "",
        group="authorization.k8s.io",
        subresources=(),
        namespaced=False,
    ),
    "scaledobjects": Kind(
        "scaledobjects",
        "ScaledObject",
        "scaledobject",
        "so",
        group="keda.sh",
        version="v1alpha1",
        subresources=("status",),
    ),
}


class ApiError(Exception):
    """An error the API server answers with a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        """Return the v1 Status body."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def group_of(resource: str) -> str:
    """The API group of a served resource ("" for the core group)."""
    kind = RESOURCES.get(resource)
    return kind.group if kind is not None else "apps"


def not_found(resource: str, name: str) -> ApiError:
    """Build the NotFound error for `resource` `name`."""
    group = group_of(resource)
    details = {"name": name, "group": group, "kind": resource}
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def conflict(resource: str, name: str) -> ApiError:
    """Build the Conflict error of a stale resourceVersion."""
    group = group_of(resource)
    qualified = f"{resource}.{group}" if group else resource
    message = (
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, {"name": name, "group": group, "kind": resource})


def invalid(kind: str, name: str, cause: str) -> ApiError:
    """Build the Invalid (422) error for one failed field."""
    return ApiError(422, "Invalid", f'{kind}.apps "{name}" is invalid: {cause}', {"name": name})


def timestamp(at: float) -> str:
    """Format a Unix time as Kubernetes does (RFC 3339, seconds, Z)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """Parse a Kubernetes timestamp into a Unix time."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def human_age(seconds: float) -> str:
    """Format an age the way kubectl prints AGE (45s, 3m20s, 95m, 5h10m, 30h, 3d4h, 12d)."""
    s = max(0, int(seconds))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def prune(value: Any) -> Any:
    """Drop null fields recursively, as Go's encoder does for omitted pointers."""
    if isinstance(value, dict):
        return {k: prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def default_container(container: Obj) -> None:
    """Apply the API server's container defaults."""
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = ":" not in tag or tag.endswith(":latest")
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def default_template(template: Obj) -> None:
    """Apply the API server's pod template defaults."""
    template.setdefault("metadata", {})
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("securityContext", {})
    pod.setdefault("schedulerName", "default-scheduler")
    for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        default_container(container)


def default_deployment(obj: Obj) -> Obj:
    """Return `obj` with the apps/v1 Deployment defaults applied."""
    obj = {**prune(copy.deepcopy(obj)), "apiVersion": "apps/v1", "kind": "Deployment"}
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", **obj}
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    default_template(spec.setdefault("template", {}))
    obj.setdefault("status", {})
    return obj


def default_replica_set(obj: Obj) -> Obj:
    """Return `obj` with the apps/v1 ReplicaSet defaults applied."""
    obj = {**prune(copy.deepcopy(obj)), "apiVersion": "apps/v1", "kind": "ReplicaSet"}
    obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet", **obj}
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    default_template(spec.setdefault("template", {}))
    obj.setdefault("status", {"replicas": 0})
    return obj


def default_pod(obj: Obj) -> Obj:
    """Return `obj` with the v1 Pod defaults applied (those of a pod template, and a phase)."""
    obj = {"apiVersion": "v1", "kind": "Pod", **prune(copy.deepcopy(obj))}
    obj.setdefault("metadata", {})
    default_template(obj)
    obj.setdefault("status", {}).setdefault("phase", "Pending")
    return obj


def default_stateful_set(obj: Obj) -> Obj:
    """Return `obj` with the apps/v1 StatefulSet defaults applied (pkg/apis/apps/v1/defaults.go)."""
    obj = {"apiVersion": "apps/v1", "kind": "StatefulSet", **prune(copy.deepcopy(obj))}
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    default_template(spec.setdefault("template", {}))
    obj.setdefault("status", {"replicas": 0, "availableReplicas": 0})
    return obj


def default_daemon_set(obj: Obj) -> Obj:
    """Return `obj` with the apps/v1 DaemonSet defaults applied (pkg/apis/apps/v1/defaults.go)."""
    obj = {"apiVersion": "apps/v1", "kind": "DaemonSet", **prune(copy.deepcopy(obj))}
    spec = obj.setdefault("spec", {})
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    default_template(spec.setdefault("template", {}))
    obj.setdefault(
        "status",
        {
            "currentNumberScheduled": 0,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 0,
            "numberReady": 0,
        },
    )
    return obj


def default_object(resource: str, obj: Obj) -> Obj:
    """Apply defaults: the workload's or the pod's, else just apiVersion and kind."""
    if resource in DEFAULTERS:
        return DEFAULTERS[resource](obj)
    kind = RESOURCES[resource]
    # A ControllerRevision's data is raw JSON, nulls included: stored as written.
    body = copy.deepcopy(obj) if resource == "controllerrevisions" else prune(copy.deepcopy(obj))
    obj = {"apiVersion": kind.api_version, "kind": kind.kind, **body}
    obj.setdefault("metadata", {})
    if resource == "horizontalpodautoscalers":
        # Go writes desiredReplicas (an int32 without omitempty) even before the first sync.
        obj.setdefault("status", {}).setdefault("desiredReplicas", 0)
    return obj


DEFAULTERS = {
    "deployments": default_deployment,
    "replicasets": default_replica_set,
    "pods": default_pod,
    "statefulsets": default_stateful_set,
    "daemonsets": default_daemon_set,
}


def validate(resource: str, obj: Obj) -> None:
    """Refuse objects the real API server would refuse for the fields we model."""
    if resource not in KINDS:
        return
    kind = KINDS[resource].kind
    name = obj["metadata"]["name"]
    spec = obj["spec"]
    replicas = spec.get("replicas", 0 if resource == "daemonsets" else None)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(kind, name, f"spec.replicas: Invalid value: {replicas!r}: must be >= 0")
    selector = spec.get("selector") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        raise invalid(kind, name, "spec.selector: Required value")
    labels = spec["template"]["metadata"].get("labels") or {}
    if not selector_matches(selector, labels):
        raise invalid(
            kind,
            name,
            "spec.template.metadata.labels: Invalid value: "
            f"{json.dumps(labels, sort_keys=True)}: `selector` does not match template `labels`",
        )
    containers = spec["template"]["spec"].get("containers") or []
    if not containers or not all(c.get("name") and c.get("image") for c in containers):
        raise invalid(kind, name, "spec.template.spec.containers: Required value")


def without_hash(template: Obj) -> Obj:
    """Return a copy of a pod template without the pod-template-hash label."""
    template = copy.deepcopy(template)
    labels = template.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
        if not labels:
            del template["metadata"]["labels"]
    return template


def templates_equal(a: Obj, b: Obj) -> bool:
    """Compare two pod templates ignoring pod-template-hash, as the controller does."""
    return without_hash(a) == without_hash(b)


def template_hash(template: Obj, collisions: int = 0) -> str:
    """Compute a stable pod-template-hash (FNV-1a, encoded like rand.SafeEncodeString)."""
    data = json.dumps(without_hash(template), sort_keys=True).encode() + str(collisions).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[ord(ch) % len(alphabet)] for ch in str(value))


def revision_of(obj: Obj) -> int:
    """Read the revision annotation (0 when absent)."""
    value = (obj["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(value) if str(value).isdigit() else 0


def controlled_by(obj: Obj, owner: Obj) -> bool:
    """Tell whether `owner` is `obj`'s controller (ownerReference controller=true, same uid)."""
    return any(
        ref.get("controller") and ref.get("uid") == owner["metadata"]["uid"]
        for ref in obj["metadata"].get("ownerReferences") or []
    )


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "N%" of `total` rounded up or down.

    None is 0 (an unset pointer); any other string is the error upstream returns.
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].lstrip("-").isdigit():
        raise ValueError(f"invalid value for IntOrString: invalid value {text!r}")
    share = int(text[:-1]) * total
    return -(-share // 100) if round_up else share // 100


def resolve_fenceposts(spec: Obj) -> tuple[int, int]:
    """Resolve maxSurge (rounded up) and maxUnavailable (rounded down) as the controller does."""
    desired = spec["replicas"]
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


# --- label and field selectors -------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[\w./-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[\w./-]*))?\s*$"
)


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_selector(text: str) -> list[tuple[str, str, frozenset[str]]]:
    """Parse a label selector string into (key, operator, values) requirements."""
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for part in _split_requirements(text or ""):
        match = _REQUIREMENT.match(part)
        if not match:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        key, op, value = match["key"], (match["op"] or "").strip(), match["value"] or ""
        values = frozenset(v.strip() for v in value.strip("()").split(",") if v.strip())
        if match["neg"]:
            requirements.append((key, "!", frozenset()))
        elif not op:
            requirements.append((key, "exists", frozenset()))
        else:
            requirements.append((key, {"==": "="}.get(op, op), values or frozenset({""})))
    return requirements


def _requirement_holds(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op == "exists":
        return key in labels
    if op == "!":
        return key not in labels
    if op in ("=", "in"):
        return key in labels and labels[key] in values
    return key not in labels or labels[key] not in values


def labels_match(text: str, labels: dict[str, str]) -> bool:
    """Tell whether `labels` satisfy the selector string `text`."""
    return all(_requirement_holds(labels, *req) for req in parse_selector(text))


def selector_string(selector: Obj) -> str:
    """Render a LabelSelector as the string form clients send (`app=x,tier in (a,b)`)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        parts.append(
            {
                "In": f"{key} in ({','.join(values)})",
                "NotIn": f"{key} notin ({','.join(values)})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(parts)


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Tell whether a LabelSelector object matches `labels`."""
    return labels_match(selector_string(selector), labels)


def fields_match(text: str, obj: Obj) -> bool:
    """Tell whether `obj` satisfies a field selector (metadata.name / metadata.namespace)."""
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        negate = "!=" in part
        field, _, value = part.replace("!=", "=").replace("==", "=").partition("=")
        actual = obj["metadata"].get(field.strip().removeprefix("metadata."))
        if (actual == value.strip()) == negate:
            return False
    return True


def go_json(value: Any) -> bytes:
    """Encode as Go's encoding/json does a map: sorted keys, compact, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.encode()


def revision_patch(obj: Obj) -> bytes:
    """The ControllerRevision data of a StatefulSet or DaemonSet (getPatch in both controllers).

    pkg/controller/statefulset/stateful_set_utils.go getPatch and
    pkg/controller/daemon/update.go getPatch: the object encoded, decoded into a
    map, reduced to {"spec":{"template":{...,"$patch":"replace"}}} and encoded
    again; Go writes the template's zero creationTimestamp as null.
    """
    template = copy.deepcopy(obj["spec"]["template"])
    template["metadata"] = {"creationTimestamp": None, **(template.get("metadata") or {})}
    template["$patch"] = "replace"
    return go_json({"spec": {"template": template}})


def fnv1_32(data: bytes) -> int:
    """FNV-1 32-bit, as Go's hash/fnv New32."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value * 0x01000193) & 0xFFFFFFFF) ^ byte
    return value


def safe_encode(text: str) -> str:
    """k8s.io/apimachinery/pkg/util/rand SafeEncodeString."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[ord(ch) % len(alphabet)] for ch in text)


def hash_controller_revision(raw: bytes, probe: int | None) -> str:
    """pkg/controller/history/controller_history.go HashControllerRevision."""
    data = raw + (str(probe).encode() if probe is not None else b"")
    return safe_encode(str(fnv1_32(data)))
