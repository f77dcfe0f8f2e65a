"""Routing and verbs of the fake API server, independent of HTTP plumbing.

`Api.handle` takes a method, path, query, headers and body and returns either
a `Reply` (status and JSON) or a `WatchStream` (an iterator of watch events).
The semantics follow the real server where clients can tell the difference:
status is ignored on the main resource and only status is taken from the
status subresource; the scale subresource edits spec.replicas; a stale
resourceVersion is a 409; deleting a Deployment deletes the ReplicaSets it
controls (the garbage collector's job, done at once). Deleting a pod is
graceful (staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go
BeforeDelete, pkg/registry/core/pod/strategy.go CheckGracefulDelete): the
grace period is the request's gracePeriodSeconds, else the pod's
terminationGracePeriodSeconds; with more than 0 the pod is answered with its
deletionTimestamp set and stays until the kubelet has stopped it (pods.py),
with 0 it goes at once.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.kubernetes import views
from sandbox.kubernetes.objects import (
    RESOURCES,
    ApiError,
    Obj,
    controlled_by,
    fields_match,
    labels_match,
)
from sandbox.kubernetes.patches import apply_patch
from sandbox.kubernetes.rbac import Attributes, Rbac
from sandbox.kubernetes.store import Store

ROUTE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status|scale))?)?/?$"
)
GROUP = re.compile(r"^/apis/(?P<group>[^/]+)(?:/(?P<version>[^/]+))?$")
STATIC: dict[str, Callable[[str], Any]] = {
    "/version": lambda address: views.VERSION,
    "/api": views.core_versions,
    "/api/v1": lambda address: views.core_resources(),
    "/apis": lambda address: views.group_list(),
}
NOT_FOUND = "the server could not find the requested resource"


@dataclass(frozen=True)
class Reply:
    """A JSON answer."""

    status: int
    body: Any

    def encode(self) -> bytes:
        """Serialize the body compactly, as the API server does (kubectl compares raw revisions)."""
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Request:
    """One parsed request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON, or answer 400."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None

    @property
    def wants_table(self) -> bool:
        """Tell whether the client asked for a server-side Table."""
        return "as=Table" in self.headers.get("accept", "")


class WatchStream:
    """The events of one watch request, produced until timeout or shutdown."""

    def __init__(
        self, store: Store, request: Request, resource: str, namespace: str | None
    ) -> None:
        self.store = store
        self.request = request
        self.resource = resource
        self.namespace = namespace
        seconds = float(request.query.get("timeoutSeconds") or 1800)
        self.deadline = time.monotonic() + seconds

    def _matches(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        return (
            (self.namespace is None or meta["namespace"] == self.namespace)
            and labels_match(self.request.query.get("labelSelector", ""), meta.get("labels") or {})
            and fields_match(self.request.query.get("fieldSelector", ""), obj)
        )

    def _event(self, kind: str, obj: Obj) -> Obj:
        if self.request.wants_table:
            now = self.store.clock()
            include = self.request.query.get("includeObject", "Metadata")
            obj = views.table(
                self.resource, [obj], version=self.store.version, now=now, include=include
            )
        return {"type": kind, "object": obj}

    def __iter__(self) -> Iterator[Obj]:
        since = int(self.request.query.get("resourceVersion") or 0)
        if since == 0:
            with self.store.cond:
                since = self.store.version
                initial = self.store.list(self.resource, self.namespace)
            for obj in filter(self._matches, initial):
                yield self._event("ADDED", obj)
        yield from self._follow(since)

    def _follow(self, since: int) -> Iterator[Obj]:
        while True:
            with self.store.cond:
                try:
                    events = self.store.events_after(since)
                except ApiError as exc:
                    yield {"type": "ERROR", "object": exc.status()}
                    return
                remaining = self.deadline - time.monotonic()
                if self.store.closed or remaining <= 0:
                    return
                if not events:
                    self.store.cond.wait(min(remaining, 0.5))
                    continue
            for event in events:
                since = event.version
                if event.resource == self.resource and self._matches(event.obj):
                    yield self._event(event.type, event.obj)


def _verb(request: Request, name: str | None) -> str:
    """The RBAC verb of a request (apiserver RequestInfoResolver)."""
    if request.method == "GET":
        if request.query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        request.method, request.method.lower()
    )


def _dry_run(request: Request) -> bool:
    """dryRun=All: validate and answer, store nothing (the only value the API accepts)."""
    value = request.query.get("dryRun")
    if value not in (None, "All"):
        raise ApiError(400, "BadRequest", f'unsupported dry run value: "{value}"')
    return value == "All"


def _fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of one protobuf message (the only wire type used here)."""
    found: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
            continue
        if wire != 2:
            raise ApiError(400, "BadRequest", "unsupported protobuf field type")
        size, at = _varint(data, at)
        found[number] = data[at : at + size]
        at += size
    return found


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def review_from_protobuf(body: bytes) -> Obj:
    """Decode a SelfSubjectAccessReview sent as application/vnd.kubernetes.protobuf.

    The envelope is k8s.io/apimachinery runtime.Unknown after the magic
    b"k8s\\x00" (field 2: raw); SelfSubjectAccessReview field 2 is spec, whose
    field 1 is resourceAttributes (k8s.io/api/authorization/v1/generated.proto:
    namespace 1, verb 2, group 3, version 4, resource 5, subresource 6, name 7).
    """
    if not body.startswith(b"k8s\x00"):
        raise ApiError(400, "BadRequest", "not a Kubernetes protobuf message")
    raw = _fields(body[4:]).get(2, b"")
    spec = _fields(raw).get(2, b"")
    attributes = _fields(_fields(spec).get(1, b""))
    names = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource"}
    names.update({6: "subresource", 7: "name"})
    decoded = {names[k]: v.decode() for k, v in attributes.items() if k in names}
    return {"spec": {"resourceAttributes": decoded}}


class Api:
    """The verbs of the fake server over a Store."""

    def __init__(self, store: Store, address: str) -> None:
        self.store = store
        self.address = address
        self.writes: list[Request] = []
        self.rbac = Rbac()
        self.webhooks: list[tuple[str, Callable[[str, Obj], str | None]]] = []
        self.terminate: Callable[[Obj, int], Obj] | None = None
        """Start a pod's graceful deletion (the kubelet's side lives with the pods)."""

    def handle(self, request: Request) -> Reply | WatchStream:
        """Answer one request; remember every write, so tests can compare clients on the wire."""
        if request.method != "GET":
            with self.store.cond:
                self.writes.append(request)
        path = request.path.rstrip("/") or "/"
        discovery = self._discovery(request, path)
        if discovery is not None:
            return discovery
        match = ROUTE.match(path)
        kind = RESOURCES.get(match["res"]) if match else None
        if match is None or kind is None or not _served_at(kind, match):
            raise ApiError(404, "NotFound", NOT_FOUND)
        resource, namespace, name, sub = match["res"], match["ns"], match["name"], match["sub"]
        if sub is not None and sub not in kind.subresources:
            raise ApiError(404, "NotFound", NOT_FOUND)
        user = self.rbac.user_of(request.headers)
        if resource == "selfsubjectaccessreviews" and request.method == "POST":
            return Reply(201, self._access_review(request, user))
        if user is not None:
            self.rbac.check(
                user,
                Attributes(
                    verb=_verb(request, name),
                    group=kind.group,
                    resource=f"{resource}/{sub}" if sub else resource,
                    namespace=namespace,
                    name=name,
                ),
            )
        return self._resource(request, resource, namespace, name, sub)

    def _resource(
        self,
        request: Request,
        resource: str,
        namespace: str | None,
        name: str | None,
        sub: str | None,
    ) -> Reply | WatchStream:
        """Answer a request the caller may make, on a collection, an object or its scale."""
        if resource == "pods" and request.method not in ("GET", "DELETE"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if name is None:
            return self._collection(request, resource, namespace)
        if namespace is None:
            raise ApiError(404, "NotFound", NOT_FOUND)
        if sub == "scale":
            return self._scale(request, resource, namespace, name)
        return self._item(request, resource, namespace, name, status_only=sub == "status")

    def _discovery(self, request: Request, path: str) -> Reply | None:
        """Answer the version, discovery and health paths; None for a resource path."""
        if path in STATIC and request.method == "GET":
            return Reply(200, STATIC[path](self.address))
        if path in ("/healthz", "/livez", "/readyz"):
            return Reply(200, "ok")
        group = GROUP.match(path)
        if group and request.method == "GET":
            found = (
                views.group_resources(group["group"], group["version"])
                if group["version"]
                else views.api_group(group["group"])
            )
            if found is not None:
                return Reply(200, found)
        return None

    # --- collections ---------------------------------------------------------------------------

    def _listing(self, request: Request, resource: str, items: list[Obj]) -> Reply:
        if request.wants_table:
            include = request.query.get("includeObject", "Metadata")
            now = self.store.clock()
            return Reply(
                200,
                views.table(resource, items, version=self.store.version, now=now, include=include),
            )
        return Reply(200, views.object_list(resource, items, self.store.version))

    def _collection(
        self, request: Request, resource: str, namespace: str | None
    ) -> Reply | WatchStream:
        if request.method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return WatchStream(self.store, request, resource, namespace)
            with self.store.cond:
                items = [
                    obj
                    for obj in self.store.list(resource, namespace)
                    if labels_match(
                        request.query.get("labelSelector", ""), obj["metadata"].get("labels") or {}
                    )
                    and fields_match(request.query.get("fieldSelector", ""), obj)
                ]
                return self._listing(request, resource, items)
        if request.method == "POST" and namespace is not None:
            return Reply(201, self._create(request, resource, namespace))
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def _create(self, request: Request, resource: str, namespace: str) -> Obj:
        obj = request.json()
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        meta = obj.setdefault("metadata", {})
        if meta.setdefault("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent "
                "on the request",
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        if not meta.get("name"):
            raise ApiError(
                422,
                "Invalid",
                f'{RESOURCES[resource].kind} "" is invalid: metadata.name: Required value: '
                "name or generateName is required",
            )
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp"):
            meta.pop(field, None)
        if "status" in RESOURCES[resource].subresources:
            obj["status"] = {}
        return self.store.create(resource, obj)

    # --- single objects ----------------------------------------------------------------------

    def _item(
        self, request: Request, resource: str, namespace: str, name: str, *, status_only: bool
    ) -> Reply:
        method = request.method
        if method == "GET":
            obj = self.store.get(resource, namespace, name)
            if request.wants_table:
                return self._listing(request, resource, [obj])
            return Reply(200, obj)
        if method == "DELETE" and not status_only and resource == "pods":
            return Reply(200, self._delete_pod(request, namespace, name))
        if method == "DELETE" and not status_only:
            return Reply(200, self._delete(resource, namespace, name))
        if method not in ("PUT", "PATCH"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        with self.store.cond:
            stored = self.store.get(resource, namespace, name)
            wanted = self._changed(request, stored)
            if not isinstance(wanted, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            if status_only:
                result = dict(stored, status=wanted.get("status") or {})
                result["metadata"] = dict(
                    stored["metadata"],
                    resourceVersion=wanted.get("metadata", {}).get("resourceVersion"),
                )
            else:
                result = dict(wanted)
                if "status" in RESOURCES[resource].subresources:
                    result["status"] = stored.get("status", {})
                result["metadata"] = dict(
                    wanted.get("metadata") or {}, name=name, namespace=namespace
                )
            if not status_only:
                self._admit(resource, result)
            return Reply(200, self.store.update(resource, result, dry_run=_dry_run(request)))

    @staticmethod
    def _changed(request: Request, stored: Obj) -> Any:
        body = request.json()
        if request.method == "PUT":
            return body
        return apply_patch(request.headers.get("content-type", ""), stored, body)

    def _delete_pod(self, request: Request, namespace: str, name: str) -> Obj:
        options = request.json() if request.body else {}
        asked = request.query.get("gracePeriodSeconds")
        if asked is None and isinstance(options, dict):
            asked = options.get("gracePeriodSeconds")
        with self.store.cond:
            pod = self.store.get("pods", namespace, name)
            default = pod["spec"].get("terminationGracePeriodSeconds", 30)
            grace = int(default if asked is None else asked)
            if grace <= 0 or self.terminate is None:
                return self.store.delete("pods", namespace, name)
            if pod["metadata"].get("deletionTimestamp"):
                return pod
            return self.terminate(pod, grace)

    def _delete(self, resource: str, namespace: str, name: str) -> Obj:
        with self.store.cond:
            obj = self.store.delete(resource, namespace, name)
            self._collect_dependents(obj)
        group = RESOURCES[resource].group
        details = {"name": name, "group": group, "kind": resource, "uid": obj["metadata"]["uid"]}
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def _admit(self, resource: str, obj: Obj) -> None:
        """Validating admission webhooks, dry runs included (webhooks declaring no side effects).

        A denial is the API server's (staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/
        errors/statuserror.go ToStatusErr): code 400 unless the webhook said otherwise,
        'admission webhook "NAME" denied the request: MESSAGE'.
        """
        for name, check in self.webhooks:
            refusal = check(resource, obj)
            if refusal is not None:
                message = f'admission webhook "{name}" denied the request: {refusal}'
                raise ApiError(400, "BadRequest", message)

    def _access_review(self, request: Request, user: str | None) -> Obj:
        """SelfSubjectAccessReview: may the requesting user do what spec.resourceAttributes says?"""
        if "protobuf" in request.headers.get("content-type", ""):
            review = review_from_protobuf(request.body)  # kubectl sends built-in types so
        else:
            review = request.json()
        if not isinstance(review, dict):
            raise ApiError(400, "BadRequest", "the body must be a SelfSubjectAccessReview")
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        resource = str(attributes.get("resource", ""))
        if attributes.get("subresource"):
            resource = f"{resource}/{attributes['subresource']}"
        allowed = user is None or self.rbac.allowed(
            user,
            Attributes(
                verb=str(attributes.get("verb", "")),
                group=str(attributes.get("group", "")),
                resource=resource,
                namespace=attributes.get("namespace") or None,
                name=attributes.get("name") or None,
            ),
        )
        status: Obj = {"allowed": allowed}  # RBAC gives no reason for a denial
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": review.get("spec") or {},
            "status": status,
        }

    def _collect_dependents(self, owner: Obj) -> None:
        """The garbage collector's work, done at once: delete what `owner` controlled."""
        namespace = owner["metadata"]["namespace"]
        for resource in ("replicasets", "controllerrevisions", "pods"):
            for obj in self.store.list(resource, namespace):
                if controlled_by(obj, owner):
                    gone = self.store.delete(resource, namespace, obj["metadata"]["name"])
                    self._collect_dependents(gone)

    def _scale(self, request: Request, resource: str, namespace: str, name: str) -> Reply:
        with self.store.cond:
            stored = self.store.get(resource, namespace, name)
            if request.method == "GET":
                return Reply(200, views.scale_of(stored))
            if request.method not in ("PUT", "PATCH"):
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            scale = self._changed(request, views.scale_of(stored))
            replicas = (
                (scale.get("spec") or {}).get("replicas", 0) if isinstance(scale, dict) else None
            )
            stored["spec"]["replicas"] = replicas
            stored["metadata"]["resourceVersion"] = scale.get("metadata", {}).get("resourceVersion")
            updated = self.store.update(resource, stored, dry_run=_dry_run(request))
            return Reply(200, views.scale_of(updated))


def _served_at(kind: Any, match: re.Match[str]) -> bool:
    """Whether the path names the group and version the resource is served at."""
    return bool(
        (kind.group, kind.version) == (match["group"] or "", match["version"] or match["core"])
    )
