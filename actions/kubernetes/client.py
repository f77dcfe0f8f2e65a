"""The Kubernetes API client: building it from a connection, reading Deployments, errors.

Only the official client is used; every API failure becomes a TemporaryError
(5xx, 429, connection) or a PermanentError (other 4xx), so the runner knows
whether to retry. A client is built fresh per connection, never from the
library's global configuration.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    Configuration,
    CustomObjectsApi,
    V1Deployment,
    V1ObjectMeta,
    V1ReplicaSet,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from actions.base import ActionError, PermanentError, TemporaryError
from actions.kubernetes.params import KubeConnection
from actions.reads import Reads

A = TypeVar("A")
REQUEST_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"


def api_client(conn: KubeConnection) -> ApiClient:
    """Build a fresh ApiClient for `conn` (in-cluster, or kubeconfig and context); no globals."""
    configuration = Configuration()
    try:
        if conn.mode == "in-cluster":
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(
                config_file=conn.kubeconfig,
                context=conn.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        raise PermanentError(f"cannot load the Kubernetes connection ({conn.mode}): {exc}") from exc
    return ApiClient(configuration)


class ReadOnce:
    """A generated API object (`AppsV1Api`, ...) whose reads go through a request's `Reads`.

    Only the client's public API methods are wrapped, so any release that has
    them works: a `read_*`, `list_*` or `get_*` call (not a watch) is made once
    per `Reads`, keyed by method and arguments, and each caller is handed a deep
    copy of the answer, a model of its own to change. Any other call is a write
    and empties the `Reads`, unless it is a dry run (`dry_run="All"`, which the
    API server applies nowhere). Everything else (`api_client`, ...) is the
    wrapped object's own, but a raw read (`_preload_content=False`) is handed out as its
    body (`RawAnswer.data`) and its `api_client` comes with the same `Reads` (`Reading`).
    """

    READS = ("read_", "list_", "get_")

    def __init__(self, api: Any, reads: Reads) -> None:
        self._api = api
        self.reads = reads

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._api, name)
        if name == "api_client":
            return Reading(value, self.reads)
        if name.startswith("_") or not callable(value):
            return value
        if name.startswith(self.READS):
            return functools.partial(self._read, name, value)
        return functools.partial(self._write, value)

    def _read(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            return call(*args, **kwargs)
        key = (type(self._api).__name__, name, repr(args), repr(sorted(kwargs.items())))
        if kwargs.get("_preload_content") is False:  # the raw answer: its body is what is read
            return RawAnswer(self.reads.read(key, lambda: bytes(call(*args, **kwargs).data)))
        return copy.deepcopy(self.reads.read(key, lambda: call(*args, **kwargs)))

    def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("dry_run"):
            self.reads.changed()
        return call(*args, **kwargs)


@dataclass(frozen=True)
class RawAnswer:
    """A read asked for raw (`_preload_content=False`), as `ReadOnce` hands it out again: its
    body as `data`, as the client's raw answer has it."""

    data: bytes


class Reading:
    """An ApiClient with a request's `Reads` beside it, as `ReadOnce.api_client` hands it out.

    Not a subclass: every attribute is the client's own, so an API built on it
    directly works as on the client; `api_for` builds one that reads once.
    """

    def __init__(self, client: ApiClient, reads: Reads) -> None:
        self.client = client
        self.reads = reads

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def api_for(kind: Callable[[ApiClient], A], api: ApiClient) -> A:
    """The API `kind` (`CustomObjectsApi`, ...) on `api`'s connection, reading through the
    request's `Reads` when `api` came with one (`Reading`)."""
    if isinstance(api, Reading):
        return cast(A, ReadOnce(kind(api.client), api.reads))
    return kind(api)


def _status_text(exc: ApiException) -> tuple[str, str]:
    """Return (reason, message) from the Status body the API server sent, if any."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body.get("reason") or exc.reason or "Unknown"), str(body["message"])
    return str(exc.reason or "Unknown"), str(exc.body or exc.reason or "no details")


def _retry_after(exc: ApiException) -> float:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    return float(value) if value and str(value).isdigit() else 2.0


def api_error(exc: ApiException, context: str | None) -> ActionError:
    """Word an API error as kubectl does; 5xx and 429 are temporary, other codes permanent."""
    reason, message = _status_text(exc)
    text = f"{context}: {message}" if context else f"Error from server ({reason}): {message}"
    status = exc.status or 0
    if status >= 500 or status == 429:
        return TemporaryError(text, delay=_retry_after(exc))
    return PermanentError(text)


@contextmanager
def kube_errors(context: str | None = None) -> Iterator[None]:
    """Turn client failures into TemporaryError (5xx, 429, network) or PermanentError (4xx)."""
    try:
        yield
    except ApiException as exc:
        raise api_error(exc, context) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
        where = context or "Kubernetes API"
        raise TemporaryError(f"{where}: cannot reach the API server: {exc}", delay=2.0) from exc
    except ValueError as exc:
        raise PermanentError(f"{context or 'Kubernetes API'}: unexpected answer: {exc}") from exc


def object_meta(obj: Any) -> V1ObjectMeta:
    """Return a client model's metadata (Deployment, ReplicaSet, Pod, ...), which must be set."""
    if getattr(obj, "metadata", None) is None:
        raise PermanentError("the API server returned an object without metadata")
    meta: V1ObjectMeta = obj.metadata
    return meta


def annotations_of(obj: V1Deployment | V1ReplicaSet) -> dict[str, str]:
    return dict(object_meta(obj).annotations or {})


def read_deployment(apps: AppsV1Api, *, namespace: str, name: str) -> V1Deployment:
    with kube_errors():
        return apps.read_namespaced_deployment(name, namespace, _request_timeout=REQUEST_TIMEOUT)


def merge_patch_custom(
    api: ApiClient,
    resource: tuple[str, str, str],
    *,
    namespace: str,
    name: str,
    body: dict[str, Any],
    what: str | None = None,
) -> None:
    """Merge-patch one custom object (`resource` is group, version, plural); errors name it
    as `what` (default `plural.group name in namespace`)."""
    group, version, plural = resource
    with kube_errors(what or f"{plural}.{group} {name} in {namespace}"):
        CustomObjectsApi(api).patch_namespaced_custom_object(
            group,
            version,
            namespace,
            plural,
            name,
            body,
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )
