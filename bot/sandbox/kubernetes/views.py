"""What the fake API server shows besides stored objects: discovery, lists, tables, scale.

Discovery is the legacy (non-aggregated) form; kubectl asks for the aggregated
one first and falls back when the answer is plain JSON. `kubectl get` asks for
server-side Tables (`as=Table;g=meta.k8s.io`), so lists can be rendered with
the same columns as a real cluster's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.sandbox.kubernetes.objects import KINDS, Obj, human_age, parse_time, selector_string

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


def core_resources() -> Obj:
    """Return /api/v1 (pods only: the ReplicaSet controller's, read-only)."""
    pods = {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "list", "watch"],
        "shortNames": ["po"],
        "categories": ["all"],
    }
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": [pods]}


def apps_group() -> Obj:
    """Return the apps APIGroup."""
    version = {"groupVersion": "apps/v1", "version": "v1"}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "apps",
        "versions": [version],
        "preferredVersion": version,
    }


def group_list() -> Obj:
    """Return /apis."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps_group()]}


def apps_resources() -> Obj:
    """Return /apis/apps/v1."""
    resources: list[Obj] = []
    for kind in KINDS.values():
        resources.append(
            {
                "name": kind.resource,
                "singularName": kind.singular,
                "namespaced": True,
                "kind": kind.kind,
                "verbs": [*VERBS, "deletecollection"],
                "shortNames": [kind.short],
                "categories": ["all"],
            }
        )
        for sub, sub_kind, group, verbs in (
            ("status", kind.kind, None, ["get", "patch", "update"]),
            ("scale", "Scale", "autoscaling", ["get", "patch", "update"]),
        ):
            entry: Obj = {"name": f"{kind.resource}/{sub}", "singularName": "", "namespaced": True}
            entry.update(kind=sub_kind, verbs=verbs)
            if group:
                entry.update(group=group, version="v1")
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apps/v1",
        "resources": resources,
    }


def object_list(resource: str, items: list[Obj], version: int) -> Obj:
    """Wrap items in a DeploymentList / ReplicaSetList / PodList."""
    kind = KINDS[resource].kind if resource in KINDS else "Pod"
    api_version = "apps/v1" if resource in KINDS else "v1"
    for item in items:
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return {
        "kind": f"{kind}List",
        "apiVersion": api_version,
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


def table(resource: str, items: list[Obj], *, version: int, now: float, include: str) -> Obj:
    """Render items as a meta.k8s.io/v1 Table, the way `kubectl get` asks for them."""
    columns, row = COLUMNS[resource]
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
