"""The part of a Kubernetes API server `kubectl apply --dry-run=client` talks to, and no more.

Client-side dry run still maps each manifest's kind to a resource through
discovery and GETs the live object to decide between create and patch. This
stand-in answers discovery the way kube-apiserver's legacy endpoints do
(`/api` an APIVersions, `/apis` an APIGroupList, `/api/v1` and
`/apis/GROUP/VERSION` an APIResourceList: kubernetes/kubernetes
staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go), for the groups the
bot's manifests use, and answers every object GET with the 404 Status an
empty cluster gives (types.go `Status`, reason NotFound). Anything else is a
405, so a kubectl that tries to write fails loudly. OpenAPI is not served:
kubectl's schema validation needs the real server's document, which no
package here ships, so the tests run kubectl with --validate=false.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (group, version) -> [(resource, kind, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("namespaces", "Namespace", False),
        ("serviceaccounts", "ServiceAccount", True),
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
    ],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("rbac.authorization.k8s.io", "v1"): [
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    ],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resource_list(group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": VERBS,
            }
            for name, kind, namespaced in RESOURCES[(group, version)]
        ],
    }


def _group_list() -> dict[str, Any]:
    groups = []
    for group, version in RESOURCES:
        if group:
            gv = {"groupVersion": f"{group}/{version}", "version": version}
            groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _answer(path: str) -> tuple[int, dict[str, Any]]:
    if path == "/api":
        versions = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        return 200, versions
    if path == "/apis":
        return 200, _group_list()
    if path == "/api/v1":
        return 200, _resource_list("", "v1")
    found = re.fullmatch(r"/apis/([^/]+)/([^/]+)", path)
    if found and (found.group(1), found.group(2)) in RESOURCES:
        return 200, _resource_list(found.group(1), found.group(2))
    if path.startswith(("/api/", "/apis/")):
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"{path} not found",
            "reason": "NotFound",
            "code": 404,
        }
        return 404, status
    return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}


class Discovery:
    """An HTTP server answering discovery and 404s, on a free port."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.paths.append(path)
                status, body = _answer(path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self) -> None:
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Discovery:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
