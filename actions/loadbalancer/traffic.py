"""The traffic model: every listener's default actions and every rule, as ordered action lists.

A route is one place the load balancer decides where a request goes: a
listener's default actions or one of its rules (DescribeListeners,
DescribeRules). Its actions stay an ordered list of ELBv2 `Action` dicts
(botocore/data/elbv2/2015-12-01/service-2.json, shape `Action`): only the
`forward` action's target groups and weights are ever changed
(`switched`), so authenticate-oidc/cognito, redirect and fixed-response
actions and their `Order` go back exactly as they were read.

Secrets: DescribeListeners/DescribeRules do not return an OIDC client secret,
and ModifyListener/ModifyRule with an authenticate-oidc action need
`ClientSecret` unless `UseExistingClientSecret` is true (service model, shape
`AuthenticateOidcActionConfig`, members ClientSecret and
UseExistingClientSecret). So what is read is stripped of any secret (moto does
echo it back; AWS does not) before it is shown or kept in memory, and every
write sets `UseExistingClientSecret`, which keeps the secret AWS holds.

The forward action: AWS answers a single-group forward with both
`TargetGroupArn` and a one-tuple `ForwardConfig`, and accepts both only when
they agree (shape `Action`, member TargetGroupArn: "To route to multiple
target groups, you must use ForwardConfig instead"). `switched` keeps the
shape it was given: a single-group forward to the bad group becomes a
single-group forward to the stable one; a weighted forward keeps its groups
and stickiness and gets weight 1 on the stable group, 0 on every other
(weights range 0 to 999, shape `TargetGroupTuple`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

from actions.aws import aws_errors
from actions.base import PermanentError

Actions = list[dict[str, Any]]
RouteKind = Literal["listener", "rule"]


@dataclass(frozen=True)
class Route:
    """One listener's default actions, or one rule's actions."""

    kind: RouteKind
    arn: str
    listener_arn: str
    label: str
    actions: Actions

    def weights(self) -> dict[str, int]:
        """Return {target group ARN: weight} of the forward action (empty: no forward)."""
        return forward_weights(self.actions)

    def sends_to(self, target_group_arn: str) -> bool:
        """Say whether any traffic of this route reaches `target_group_arn`."""
        return self.weights().get(target_group_arn, 0) > 0

    def share(self, target_group_arn: str) -> int:
        """Percent of this route's forwarded traffic that reaches `target_group_arn`."""
        weights = self.weights()
        total = sum(weights.values())
        return round(100 * weights.get(target_group_arn, 0) / total) if total else 0

    def final_type(self) -> str:
        """Return the type of the action that ends this route (forward, redirect, ...)."""
        last = sorted(self.actions, key=_order)[-1] if self.actions else {}
        return str(last.get("Type", "none"))

    def to_json(self) -> dict[str, Any]:
        """Return the route as JSON for memory and specs (no secrets: see `sanitized`)."""
        return {
            "kind": self.kind,
            "arn": self.arn,
            "listener_arn": self.listener_arn,
            "label": self.label,
            "actions": self.actions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Route:
        """Rebuild a route stored by `to_json`."""
        kind: RouteKind = "rule" if data["kind"] == "rule" else "listener"
        return cls(kind, data["arn"], data["listener_arn"], data["label"], list(data["actions"]))


def _order(action: dict[str, Any]) -> int:
    return int(action.get("Order", 0))


def forward_groups(action: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the forward action's target-group tuples, a plain TargetGroupArn as weight 1."""
    groups = action.get("ForwardConfig", {}).get("TargetGroups")
    if groups:
        return [
            {"TargetGroupArn": g["TargetGroupArn"], "Weight": g.get("Weight", 1)} for g in groups
        ]
    if action.get("TargetGroupArn"):
        return [{"TargetGroupArn": action["TargetGroupArn"], "Weight": 1}]
    return []


def forward_weights(actions: Actions) -> dict[str, int]:
    """Return {target group ARN: weight} of the forward action among `actions`."""
    for action in actions:
        if action.get("Type") == "forward":
            return {g["TargetGroupArn"]: int(g["Weight"]) for g in forward_groups(action)}
    return {}


def sanitized(actions: Actions) -> Actions:
    """Return a copy of `actions` without OIDC client secrets or write-only flags."""
    clean = copy.deepcopy(actions)
    for action in clean:
        oidc = action.get("AuthenticateOidcConfig")
        if oidc is not None:
            oidc.pop("ClientSecret", None)
            oidc.pop("UseExistingClientSecret", None)
    return clean


def writable(actions: Actions) -> Actions:
    """Return `actions` ready for ModifyListener/ModifyRule: OIDC keeps its existing secret."""
    out = sanitized(actions)
    for action in out:
        if "AuthenticateOidcConfig" in action:
            action["AuthenticateOidcConfig"]["UseExistingClientSecret"] = True
    return out


def switched(actions: Actions, *, stable: str) -> Actions:
    """Return `actions` with the forward sending all traffic to `stable`; nothing else changes."""
    out = sanitized(actions)
    for action in out:
        if action.get("Type") == "forward":
            _forward_all_to(action, stable)
    return out


def _forward_all_to(action: dict[str, Any], stable: str) -> None:
    groups = forward_groups(action)
    arns = [g["TargetGroupArn"] for g in groups]
    if len(arns) <= 1:
        tuples = [{"TargetGroupArn": stable, "Weight": 1}]
    else:
        tuples = [{"TargetGroupArn": arn, "Weight": 1 if arn == stable else 0} for arn in arns]
        if stable not in arns:
            tuples.append({"TargetGroupArn": stable, "Weight": 1})
    if "ForwardConfig" in action:
        action["ForwardConfig"] = {**action["ForwardConfig"], "TargetGroups": tuples}
    if len(tuples) == 1 and ("TargetGroupArn" in action or "ForwardConfig" not in action):
        action["TargetGroupArn"] = stable
    else:
        action.pop("TargetGroupArn", None)
        action.setdefault("ForwardConfig", {"TargetGroups": tuples})


def same_routing(left: Actions, right: Actions) -> bool:
    """Say whether two action lists route alike (forward shape and secrets aside)."""
    return _canonical(left) == _canonical(right)


def _canonical(actions: Actions) -> str:
    items = []
    for action in sorted(sanitized(actions), key=_order):
        if action.get("Type") == "forward":
            sticky = action.get("ForwardConfig", {}).get("TargetGroupStickinessConfig")
            action = {
                "Type": "forward",
                "Order": action.get("Order"),
                "weights": forward_weights([action]),
                "sticky": sticky or {"Enabled": False},
            }
        items.append(action)
    return json.dumps(items, sort_keys=True)


def describe_weights(actions: Actions, names: dict[str, str]) -> str:
    """Say where `actions` forward, e.g. `blue 90%, green 10%` (`names`: ARN to name)."""
    weights = forward_weights(actions)
    total = sum(weights.values())
    if not weights:
        return "no forward"
    if not total:
        return "forward with every weight 0"
    parts = [
        f"{names.get(arn, group_name(arn))} {round(100 * w / total)}%" for arn, w in weights.items()
    ]
    return ", ".join(parts)


def group_name(arn: str) -> str:
    """Return the name part of a target group ARN (`.../targetgroup/<name>/<id>`)."""
    parts = arn.split(":targetgroup/", 1)
    return parts[1].split("/", 1)[0] if len(parts) == 2 else arn


# --- reading and writing --------------------------------------------------------------


def read_routes(
    client: Any, *, load_balancer_arn: str | None, listener_arns: list[str]
) -> list[Route]:
    """Describe the listeners (named, or all of the load balancer) and each one's rules."""
    listeners = _describe_listeners(client, load_balancer_arn, listener_arns)
    routes: list[Route] = []
    for listener in sorted(listeners, key=lambda item: int(item.get("Port", 0))):
        arn = listener["ListenerArn"]
        where = f"{listener.get('Protocol', '')}:{listener.get('Port', '')}".strip(":")
        label = f"listener {where}"
        routes.append(Route("listener", arn, arn, label, sanitized(listener["DefaultActions"])))
        routes += _rules(client, arn, where)
    return routes


def _describe_listeners(
    client: Any, load_balancer_arn: str | None, listener_arns: list[str]
) -> list[dict[str, Any]]:
    what = ", ".join(listener_arns) if listener_arns else str(load_balancer_arn)
    with aws_errors(f"describe listeners of {what}"):
        pages = client.get_paginator("describe_listeners").paginate(
            **(
                {"ListenerArns": listener_arns}
                if listener_arns
                else {"LoadBalancerArn": load_balancer_arn}
            )
        )
        found = [item for page in pages for item in page["Listeners"]]
    if load_balancer_arn:
        found = [item for item in found if item.get("LoadBalancerArn") == load_balancer_arn]
    if not found:
        raise PermanentError(f"{what} has no listener: nothing to switch")
    return found


def _rules(client: Any, listener_arn: str, where: str) -> list[Route]:
    """Return the listener's non-default rules by priority (the default is the listener's)."""
    with aws_errors(f"describe rules of listener {listener_arn}"):
        found: list[dict[str, Any]] = []
        marker: str | None = None
        for _page in range(100):
            page = client.describe_rules(
                ListenerArn=listener_arn, **({"Marker": marker} if marker else {})
            )
            found += page["Rules"]
            marker = page.get("NextMarker")
            if not marker:
                break
    rules = sorted((r for r in found if not r.get("IsDefault")), key=lambda r: int(r["Priority"]))
    return [
        Route("rule", r["RuleArn"], listener_arn, _rule_label(r, where), sanitized(r["Actions"]))
        for r in rules
    ]


def _rule_label(rule: dict[str, Any], where: str) -> str:
    conditions = []
    for condition in rule.get("Conditions", []):
        field = condition.get("Field", "")
        values = condition.get("Values") or _condition_values(condition)
        conditions.append(f"{field} {','.join(values)}".strip())
    return f"rule {rule['Priority']} ({'; '.join(conditions) or 'no condition'}) on {where}"


def _condition_values(condition: dict[str, Any]) -> list[str]:
    for key, config in condition.items():
        if key.endswith("Config") and isinstance(config, dict) and "Values" in config:
            return [str(v) for v in config["Values"]]
    return []


def write_route(client: Any, route: Route, actions: Actions) -> None:
    """Send `actions` to the route with ModifyListener (defaults) or ModifyRule."""
    body = writable(actions)
    if route.kind == "listener":
        with aws_errors(f"modify {route.label} ({route.arn})"):
            client.modify_listener(ListenerArn=route.arn, DefaultActions=body)
    else:
        with aws_errors(f"modify {route.label} ({route.arn})"):
            client.modify_rule(RuleArn=route.arn, Actions=body)
