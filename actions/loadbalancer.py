"""Blue-green rollback: switch an ALB listener between two target groups (boto3 elbv2).

The listener itself says which colour is live: a plain forward names one
target group, a weighted forward (`ForwardConfig`) sends most traffic to the
group with the greatest weight. An even split has no active colour, so the
default plan refuses and a person must pick one. Reading the state at plan time
puts the exact from/to target groups into `describe()`, so an approval no
longer holds once someone else flips the listener.

The switch replaces the procedures' `curl -f` before and after: it refuses
unless the target side answers its health URL and every registered target is
healthy (`describe_target_health`), then verifies through the load balancer's
health URL with backoff, and switches back when that fails. The previous
default actions go to `ctx.memory` before the listener changes, so a resumed
step (or a later undo) restores exactly what was there, weights included.

Health URLs are probed with `actions.http`'s one poller (`check_health` for
the gate, `poll_health` for the verification); the boto3 client and its error
translation come from `actions.aws`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from actions.aws import aws_client, aws_errors
from actions.base import (
    ActionError,
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    StepContext,
    StepResult,
    TargetPlan,
)
from actions.http.health import check_health, poll_health
from actions.params import AwsConnection, Strict

Colour = Literal["blue", "green"]
COLOURS: tuple[Colour, Colour] = ("blue", "green")


class Side(Strict):
    """One colour of a blue-green pair."""

    target_group_arn: str
    health_url: str | None = None


class BlueGreenParams(Strict):
    """A listener and the two target groups it can forward to.

    `verify_timeout` bounds the load-balancer health polling after the switch;
    the step keeps time beyond it to switch back.
    """

    kind: Literal["bluegreen"]
    listener_arn: str
    blue: Side
    green: Side
    lb_health_url: str | None = None
    aws: AwsConnection = AwsConnection()
    verify_timeout: float = 60.0

    def side(self, colour: Colour) -> Side:
        """Return the side of `colour`."""
        return self.blue if colour == "blue" else self.green

    def colour_of(self, target_group_arn: str) -> Colour | None:
        """Return the colour whose target group is `target_group_arn`, if any."""
        for colour in COLOURS:
            if self.side(colour).target_group_arn == target_group_arn:
                return colour
        return None


# --- reading the listener -------------------------------------------------------


@dataclass(frozen=True)
class ListenerState:
    """A listener's default actions and the weight each target group gets."""

    actions: list[dict[str, Any]]
    weights: dict[str, int]

    @property
    def active(self) -> str | None:
        """The target group with the greatest weight; None when none or tied."""
        if not self.weights:
            return None
        top = max(self.weights.values())
        leaders = [arn for arn, weight in self.weights.items() if weight == top]
        return leaders[0] if len(leaders) == 1 and top > 0 else None

    def share(self, target_group_arn: str) -> int:
        """Percent of traffic `target_group_arn` gets."""
        total = sum(self.weights.values())
        return round(100 * self.weights.get(target_group_arn, 0) / total) if total else 0


def forward_weights(actions: list[dict[str, Any]]) -> dict[str, int]:
    """Return {target group ARN: weight} of the forward action among `actions`."""
    for action in actions:
        if action.get("Type") != "forward":
            continue
        groups = action.get("ForwardConfig", {}).get("TargetGroups")
        if groups:
            return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
        if action.get("TargetGroupArn"):
            return {action["TargetGroupArn"]: 1}
    return {}


def read_listener(client: Any, listener_arn: str) -> ListenerState:
    """Describe `listener_arn` and return its default actions and weights."""
    with aws_errors(f"describe listener {listener_arn}"):
        listeners = client.describe_listeners(ListenerArns=[listener_arn])["Listeners"]
    actions = listeners[0]["DefaultActions"]
    return ListenerState(actions=actions, weights=forward_weights(actions))


def target_group_name(arn: str) -> str:
    """Return the name part of a target group ARN (`.../targetgroup/<name>/<id>`)."""
    parts = arn.split(":targetgroup/", 1)
    return parts[1].split("/", 1)[0] if len(parts) == 2 else arn


def side_checks(client: Any, *, params: BlueGreenParams, colour: Colour) -> list[Check]:
    """Check that `colour`'s health URL passes and its targets are registered and healthy."""
    side = params.side(colour)
    checks = []
    if side.health_url:
        health = check_health(side.health_url)
        checks.append(Check(f"{colour} health URL passes", health.ok, health.detail))
    checks.append(_targets_check(client, side=side, colour=colour))
    return checks


def _targets_check(client: Any, *, side: Side, colour: Colour) -> Check:
    name = f"{colour} targets registered and healthy"
    with aws_errors(f"describe target health of {side.target_group_arn}"):
        found = client.describe_target_health(TargetGroupArn=side.target_group_arn)
    targets = found["TargetHealthDescriptions"]
    if not targets:
        return Check(name, False, f"{target_group_name(side.target_group_arn)} has no targets")
    bad = [_describe_target(t) for t in targets if t["TargetHealth"]["State"] != "healthy"]
    if bad:
        return Check(name, False, "; ".join(bad))
    return Check(name, True, f"{len(targets)} healthy")


def _describe_target(description: dict[str, Any]) -> str:
    target, health = description["Target"], description["TargetHealth"]
    reason = health.get("Description") or health.get("Reason") or ""
    where = f"{target['Id']}:{target.get('Port', '')}".rstrip(":")
    return f"{where} {health['State']}" + (f" ({reason})" if reason else "")


def _modify(client: Any, listener_arn: str, actions: list[dict[str, Any]]) -> None:
    with aws_errors(f"modify listener {listener_arn}"):
        client.modify_listener(ListenerArn=listener_arn, DefaultActions=actions)


def _memory_key(listener_arn: str) -> str:
    return f"loadbalancer.previous_actions:{listener_arn}"


# --- actions ----------------------------------------------------------------------


@dataclass
class SwitchListener:
    """Forward all of a listener's traffic to one colour, verify, switch back on failure."""

    params: BlueGreenParams
    to_colour: Colour
    from_colour: Colour | None
    enforce_checks: bool = True
    name: str = "loadbalancer.switch_listener"
    idempotent: bool = True
    timeout: float = field(init=False)

    def __post_init__(self) -> None:
        self.timeout = self.params.verify_timeout + 60.0

    def describe(self) -> str:
        """Name the listener, both colours and target groups, and the health gates."""
        to_tg = self.params.side(self.to_colour).target_group_arn
        if self.from_colour is None:
            source = "an even split"
        else:
            source = f"{self.from_colour} ({self.params.side(self.from_colour).target_group_arn})"
        listener = self.params.listener_arn
        text = f"Switch listener {listener} from {source} to {self.to_colour} ({to_tg})"
        if not self.enforce_checks:
            text += " without requiring its health checks (forced)"
        if self.params.lb_health_url:
            text += f"; verify {self.params.lb_health_url}, switching back if it fails"
        return text

    def run(self, ctx: StepContext) -> StepResult:
        """Check the target side, switch, verify, and switch back if verification fails."""
        client = aws_client(self.params.aws, "elbv2")
        state = read_listener(client, self.params.listener_arn)
        key = _memory_key(self.params.listener_arn)
        to_tg = self.params.side(self.to_colour).target_group_arn
        lines: list[str] = []
        if set(state.weights) == {to_tg} and key in ctx.memory:
            lines.append(f"listener already forwards to {self.to_colour}")
        else:
            lines += self._gate(client, ctx)
            ctx.memory[key] = state.actions
            _modify(client, self.params.listener_arn, _forward(to_tg))
            lines.append(f"listener now forwards to {self.to_colour} ({to_tg})")
            ctx.emit(lines[-1])
        previous: list[dict[str, Any]] = ctx.memory[key]
        lines.append(self._verify(client, ctx, previous))
        return StepResult(
            summary=f"traffic switched to {self.to_colour}",
            output="\n".join(lines),
            data=self._data(previous),
        )

    def _gate(self, client: Any, ctx: StepContext) -> list[str]:
        checks = side_checks(client, params=self.params, colour=self.to_colour)
        lines = [f"{'ok' if c.ok else 'FAILED'}: {c.name}: {c.detail}" for c in checks]
        for line in lines:
            ctx.emit(line)
        failed = [c for c in checks if not c.ok]
        if failed and self.enforce_checks:
            reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            raise PermanentError(f"refusing to switch to {self.to_colour}: {reasons}")
        return lines

    def _verify(self, client: Any, ctx: StepContext, previous: list[dict[str, Any]]) -> str:
        url = self.params.lb_health_url
        if not url:
            return "no load balancer health URL configured; not verified"
        budget = min(self.params.verify_timeout, max(0.0, ctx.remaining() - 30.0))
        health = poll_health(url, deadline=time.monotonic() + budget)
        if health.ok:
            return f"verified: {health.detail} after {health.elapsed:.1f}s"
        back = _colour_label(self.params, previous)
        try:
            _modify(client, self.params.listener_arn, previous)
        except ActionError as exc:
            raise PermanentError(
                f"load balancer health failed after switching to {self.to_colour} "
                f"({health.detail}) and switching back to {back} failed: {exc}; "
                f"listener still forwards to {self.to_colour}: manual intervention required"
            ) from exc
        raise PermanentError(
            f"load balancer health failed after switching to {self.to_colour} "
            f"({health.detail}, {health.attempts} tries in {health.elapsed:.1f}s); "
            f"switched back to {back}"
        )

    def _data(self, previous: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "listener_arn": self.params.listener_arn,
            "previous_actions": previous,
            "from_colour": self.from_colour,
            "to_colour": self.to_colour,
            "to_target_group": self.params.side(self.to_colour).target_group_arn,
        }


@dataclass
class RestoreListener:
    """Put a listener's default actions back to what a SwitchListener recorded."""

    params: BlueGreenParams
    actions: list[dict[str, Any]]
    name: str = "loadbalancer.restore_listener"
    idempotent: bool = True
    timeout: float = 60.0

    def describe(self) -> str:
        """Name the listener and what it will forward to again."""
        weights = forward_weights(self.actions)
        parts = [f"{target_group_name(arn)} weight {w}" for arn, w in weights.items()]
        return f"Restore listener {self.params.listener_arn} to forward to " + ", ".join(parts)

    def run(self, ctx: StepContext) -> StepResult:
        """Write the recorded default actions back."""
        client = aws_client(self.params.aws, "elbv2")
        _modify(client, self.params.listener_arn, self.actions)
        back = _colour_label(self.params, self.actions)
        return StepResult(summary=f"listener restored to {back}", data={"actions": self.actions})


def _forward(target_group_arn: str) -> list[dict[str, Any]]:
    return [{"Type": "forward", "TargetGroupArn": target_group_arn}]


def _colour_label(params: BlueGreenParams, actions: list[dict[str, Any]]) -> str:
    active = ListenerState(actions=actions, weights=forward_weights(actions)).active
    colour = params.colour_of(active) if active else None
    return colour or (target_group_name(active) if active else "the previous actions")


# --- the target -----------------------------------------------------------------


class BlueGreenTarget:
    """A listener that forwards to blue or green; rolling back means switching colour."""

    def __init__(self, params: BlueGreenParams) -> None:
        self.params = params

    def points(self) -> list[RollbackPoint]:
        """List blue and green, the one taking most traffic marked current."""
        state = self._state()
        return [self._point(colour, state) for colour in COLOURS]

    def checks(self, ref: str | None) -> list[Check]:
        """Check that the listener can be read and the target colour is healthy."""
        try:
            client = aws_client(self.params.aws, "elbv2")
            state = read_listener(client, self.params.listener_arn)
            to_colour = self._resolve(ref, state)
            current = self._active_colour(state)
            listener = Check("listener readable", True, f"forwards to {current or 'a split'}")
            return [listener, *side_checks(client, params=self.params, colour=to_colour)]
        except ActionError as exc:
            return [Check("listener readable and target colour known", False, str(exc))]

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Switch to `ref` (None: the inactive colour); `force` skips the target-side gate."""
        try:
            state = self._state()
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        to_colour = self._resolve(ref, state)
        step = SwitchListener(
            self.params,
            to_colour=to_colour,
            from_colour=self._active_colour(state),
            enforce_checks=not force,
        )
        notes = ["forced: the target colour's health is reported, not required"] if force else []
        return TargetPlan(rollback=[step], notes=notes)

    def _state(self) -> ListenerState:
        return read_listener(aws_client(self.params.aws, "elbv2"), self.params.listener_arn)

    def _point(self, colour: Colour, state: ListenerState) -> RollbackPoint:
        arn = self.params.side(colour).target_group_arn
        label = f"{colour} · {target_group_name(arn)} · {state.share(arn)}% of traffic"
        return RollbackPoint(ref=colour, label=label, is_current=state.active == arn)

    def _active_colour(self, state: ListenerState) -> Colour | None:
        return self.params.colour_of(state.active) if state.active else None

    def _resolve(self, ref: str | None, state: ListenerState) -> Colour:
        if ref is not None and ref not in COLOURS:
            raise PlanningError(f"unknown colour {ref!r}: choose blue or green")
        active = state.active
        current = self.params.colour_of(active) if active else None
        if active is not None and current is None:
            raise PlanningError(f"listener forwards to {active}, which is neither blue nor green")
        if ref is None and current is None:
            raise PlanningError("traffic is split evenly: choose blue or green")
        if ref is None:
            return "green" if current == "blue" else "blue"
        if ref == current:
            raise PlanningError(f"{ref} is already active")
        return "blue" if ref == "blue" else "green"
