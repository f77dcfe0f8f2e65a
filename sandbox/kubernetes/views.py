"""What the fake API server shows besides stored objects: discovery, lists, tables, scale.

Discovery is the legacy (non-aggregated) form; kubectl asks for the aggregated
one first and falls back when the answer is plain JSON. `kubectl get` asks for
server-side Tables (`as=Table;g=meta.k8s.io`), so lists can be rendered with
the same columns as a real cluster's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.kubernetes.objects import (
    RESOURCES,
    Kind,
    Obj,
    human_age,
    parse_time,
    selector_string,
)

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def core_versions(address: str) -> Obj:
    """Return /api."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _resource_entries(kinds: list[Kind]) -> list[Obj]:
    entries: list[Obj] = []
    for kind in kinds:
        read_only = kind.resource == "pods"
        verbs = ["get", "list", "watch"] if read_only else [*VERBS, "deletecollection"]
        entries.append(
            {
                "name": kind.resource,
                "singularName": kind.singular,
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": verbs,
                "shortNames": [kind.short],
                "categories": ["all"],
            }
        )
        for sub in kind.subresources:
            entry: Obj = {"name": f"{kind.resource}/{sub}", "singularName": "", "namespaced": True}
            if sub == "scale":
                entry.update(kind="Scale", group="autoscaling", version="v1")
            else:
                entry.update(kind=kind.kind)
            entry["verbs"] = ["create"] if sub == "eviction" else ["get", "patch", "update"]
            entries.append(entry)
    return entries


def core_resources() -> Obj:
    """Return /api/v1."""
    kinds = [k for k in RESOURCES.values() if not k.group]
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": _resource_entries(kinds)}


def _versions() -> dict[str, list[str]]:
    versions: dict[str, list[str]] = {}
    for kind in RESOURCES.values():
        if kind.group and kind.version not in versions.setdefault(kind.group, []):
            versions[kind.group].append(kind.version)
    return versions


def api_group(group: str) -> Obj | None:
    """Return one APIGroup, or None if the group is not served."""
    versions = _versions().get(group)
    if not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def group_list() -> Obj:
    """Return /apis."""
    groups = [api_group(group) for group in _versions()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group_resources(group: str, version: str) -> Obj | None:
    """Return /apis/GROUP/VERSION, or None if not served."""
    kinds = [k for k in RESOURCES.values() if (k.group, k.version) == (group, version)]
    if not kinds:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}",
        "resources": _resource_entries(kinds),
    }


def object_list(resource: str, items: list[Obj], version: int) -> Obj:
    """Wrap items in a DeploymentList / PodList / ...List."""
    kind = RESOURCES[resource]
    for item in items:
        item.setdefault("apiVersion", kind.api_version)
        item.setdefault("kind", kind.kind)
    return {
        "kind": f"{kind.kind}List",
        "apiVersion": kind.api_version,
        "metadata": {"resourceVersion": str(version)},
        "items": items,
    }


def scale_of(obj: Obj) -> Obj:
    """Return the autoscaling/v1 Scale of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {
            "replicas": obj["status"].get("replicas", 0),
            "selector": selector_string(obj["spec"]["selector"]),
        },
    }


# --- server-side tables ------------------------------------------------------------------------


def _containers(obj: Obj) -> list[Obj]:
    return obj["spec"]["template"]["spec"].get("containers") or []


def _deployment_row(obj: Obj, now: float) -> list[Any]:
    status = obj["status"]
    return [
        obj["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{obj['spec']['replicas']}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        human_age(now - parse_time(obj["metadata"]["creationTimestamp"])),
        ",".join(c["name"] for c in _containers(obj)),
        ",".join(c["image"] for c in _containers(obj)),
        selector_string(obj["spec"]["selector"]),
    ]


def _replica_set_row(obj: Obj, now: float) -> list[Any]:
    status = obj["status"]
    return [
        obj["metadata"]["name"],
        obj["spec"]["replicas"],
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        human_age(now - parse_time(obj["metadata"]["creationTimestamp"])),
        ",".join(c["name"] for c in _containers(obj)),
        ",".join(c["image"] for c in _containers(obj)),
        selector_string(obj["spec"]["selector"]),
    ]


def _pod_row(obj: Obj, now: float) -> list[Any]:
    """NAME, READY, STATUS, AGE as kubectl prints them; a pod being deleted is Terminating."""
    containers = obj["spec"].get("containers") or []
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in obj.get("status", {}).get("conditions") or []
    )
    phase = obj.get("status", {}).get("phase", "Pending")
    shown = "Terminating" if obj["metadata"].get("deletionTimestamp") else phase
    return [
        obj["metadata"]["name"],
        f"{len(containers) if ready else 0}/{len(containers)}",
        shown,
        human_age(now - parse_time(obj["metadata"]["creationTimestamp"])),
    ]


def _column(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


_WIDE = [
    _column("Containers", priority=1),
    _column("Images", priority=1),
    _column("Selector", priority=1),
]
COLUMNS: dict[str, tuple[list[Obj], Callable[[Obj, float], list[Any]]]] = {
    "deployments": (
        [
            _column("Name", fmt="name"),
            _column("Ready"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            _column("Age"),
            *_WIDE,
        ],
        _deployment_row,
    ),
    "replicasets": (
        [
            _column("Name", fmt="name"),
            _column("Desired", "integer"),
            _column("Current", "integer"),
            _column("Ready", "integer"),
            _column("Age"),
            *_WIDE,
        ],
        _replica_set_row,
    ),
    "pods": (
        [_column("Name", fmt="name"), _column("Ready"), _column("Status"), _column("Age")],
        lambda obj, now: _pod_row(obj, now),
    ),
}


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def _plain_row(obj: Obj, now: float) -> list[Any]:
    return [
        obj["metadata"]["name"],
        human_age(now - parse_time(obj["metadata"]["creationTimestamp"])),
    ]


def table(resource: str, items: list[Obj], *, version: int, now: float, include: str) -> Obj:
    """Render items as a meta.k8s.io/v1 Table, the way `kubectl get` asks for them."""
    plain = ([_column("Name", fmt="name"), _column("Age")], _plain_row)
    columns, row = COLUMNS.get(resource, plain)
    rows = []
    for item in items:
        entry: Obj = {"cells": row(item, now)}
        shown = _row_object(item, include)
        if shown is not None:
            entry["object"] = shown
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(version)},
        "columnDefinitions": columns,
        "rows": rows,
    }
