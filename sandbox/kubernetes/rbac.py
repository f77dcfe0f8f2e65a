"""RBAC for one configured user, as the API server's RBAC authorizer decides it.

kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go (RBACAuthorizer.Authorize,
RuleAllows): a request is allowed when a rule of a Role bound to the user in
the request's namespace (or of a ClusterRole bound by a ClusterRoleBinding,
or by a RoleBinding in that namespace) matches its API group, resource
("deployments", or "deployments/scale" for a subresource; "*" matches all)
and verb, and its resourceNames, when it has any, hold the object's name
(pkg/apis/rbac/v1/evaluation_helpers.go ResourceNameMatches: a rule with names
never matches a request without one, a list or a watch of the collection).
Requests are mapped to verbs as the API server's RequestInfoResolver does: GET
on an object is get, on a collection list, with watch=true watch; POST create,
PUT update, PATCH patch, DELETE delete.
Discovery and SelfSubjectAccessReview are open to every authenticated user
(the default ClusterRoles system:discovery and system:basic-user).

Only requests bearing the configured user's token are checked; the tests'
own requests (no token) act as cluster-admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sandbox.kubernetes.objects import ApiError


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (the authorizer's Attributes): `resource` is
    "deployments/scale" for a subresource; `name` is None for a collection."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None = None


@dataclass(frozen=True)
class Rule:
    """One PolicyRule."""

    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str] = frozenset()

    def allows(self, request: Attributes) -> bool:
        """RuleAllows: group, resource, verb (`*` matches anything) and name all match."""
        return (
            ("*" in self.groups or request.group in self.groups)
            and ("*" in self.resources or request.resource in self.resources)
            and ("*" in self.verbs or request.verb in self.verbs)
            and (not self.names or (request.name or "") in self.names)
        )


def _rules(role: dict[str, Any]) -> list[Rule]:
    return [
        Rule(
            frozenset(r.get("apiGroups") or []),
            frozenset(r.get("resources") or []),
            frozenset(r.get("verbs") or []),
            frozenset(r.get("resourceNames") or []),
        )
        for r in role.get("rules") or []
    ]


def _subject_user(subject: dict[str, Any], binding_namespace: str | None) -> str:
    if subject.get("kind") == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return f"system:serviceaccount:{namespace}:{subject['name']}"
    return str(subject.get("name", ""))


@dataclass
class Rbac:
    """The bindings of one manifest, enforced for the users whose tokens are known."""

    tokens: dict[str, str] = field(default_factory=dict)
    # user -> [(namespace or None for cluster-wide, rule)]
    grants: dict[str, list[tuple[str | None, Rule]]] = field(default_factory=dict)

    def load(self, manifest: str) -> None:
        """Read Roles, ClusterRoles and their bindings from a YAML manifest."""
        docs = [d for d in yaml.safe_load_all(manifest) if isinstance(d, dict)]
        roles = {
            (d["kind"], (d.get("metadata") or {}).get("namespace"), d["metadata"]["name"]): d
            for d in docs
            if d.get("kind") in ("Role", "ClusterRole")
        }
        for binding in (d for d in docs if d.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
            namespace = (binding.get("metadata") or {}).get("namespace")
            ref = binding["roleRef"]
            role_namespace = namespace if ref["kind"] == "Role" else None
            role = roles.get((ref["kind"], role_namespace, ref["name"]))
            if role is None:
                continue
            scope = namespace if binding["kind"] == "RoleBinding" else None
            for subject in binding.get("subjects") or []:
                user = _subject_user(subject, namespace)
                self.grants.setdefault(user, []).extend((scope, rule) for rule in _rules(role))

    def user_of(self, headers: dict[str, str]) -> str | None:
        """The configured user a request acts as, or None (cluster-admin).

        By bearer token, or by `Impersonate-User` (kubectl --as), which the
        cluster-admin may use.
        """
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if token in self.tokens:
            return self.tokens[token]
        impersonated = headers.get("impersonate-user")
        return impersonated if impersonated in self.tokens.values() else None

    def allowed(self, user: str, request: Attributes) -> bool:
        """Authorize: some bound rule in scope matches."""
        return any(
            (scope is None or scope == request.namespace) and rule.allows(request)
            for scope, rule in self.grants.get(user, [])
        )

    def check(self, user: str, request: Attributes) -> None:
        """Raise the API server's 403 unless allowed."""
        if self.allowed(user, request):
            return
        verb, group, resource, name = request.verb, request.group, request.resource, request.name
        plural = resource.split("/", 1)[0]
        qualified = f"{plural}.{group}" if group else plural
        subject = f'{qualified} "{name}"' if name else qualified
        namespace = request.namespace
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API '
            f'group "{group}"{where}'
        )
        details = {"name": name or "", "group": group, "kind": plural}
        raise ApiError(403, "Forbidden", message, details)
