"""The Kubernetes API client: building it from a connection, reading Deployments, errors.

Only the official client is used; every API failure becomes a TemporaryError
(5xx, 429, connection) or a PermanentError (other 4xx), so the runner knows
whether to retry. A client is built fresh per connection, never from the
library's global configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
from actions.reads import changed, remembered

REQUEST_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"
_REVIEWS = "/apis/authorization.k8s.io/"


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
    return ReadOnceApiClient(configuration)


class ReadOnceApiClient(ApiClient):  # type: ignore[misc]
    """The official ApiClient; inside `actions.reads.read_once()` each GET is sent once.

    Every generated API method sends through `ApiClient.call_api(method, url,
    header_params, body, post_params, _request_timeout)` (kubernetes 37,
    kubernetes/client/api_client.py `_call_with_legacy_options`), `url` being
    the whole URL with its query. A GET (not a watch) is remembered by URL and
    Accept header and its `RESTResponse` handed out again: its `read()` keeps
    the body, so each caller deserializes the same answer into models of its
    own. Any other request is a write and empties the scope, except a dry run
    and an access review (a SelfSubjectAccessReview is created, stored nowhere).

    Reading once is also how the read paths save the models' validation:
    `Configuration.client_side_validation = False` would not. In kubernetes 37
    it is only stored (kubernetes/client/configuration.py `__init__`,
    kubernetes/client/api_client.py `ApiClient.__init__`) and read nowhere
    else; the models are pydantic models that `ApiClient.__deserialize_model`
    builds with `klass.from_dict`, which always calls `cls.model_validate`
    (kubernetes/client/models/v1_deployment.py `V1Deployment.from_dict`).
    """

    def call_api(
        self,
        method: str,
        url: str,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        def send() -> Any:
            return super(ReadOnceApiClient, self).call_api(
                method, url, header_params, body, post_params, _request_timeout=_request_timeout
            )

        if method != "GET" or "watch=" in url:
            if method != "GET" and "dryRun=" not in url and _REVIEWS not in url:
                changed()
            return send()
        return remembered((url, (header_params or {}).get("Accept")), send)


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
    return obj.metadata


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
