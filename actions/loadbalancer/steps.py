"""The switch and its undo: every route forwarding to the bad group, recorded, switched, verified.

`SwitchTraffic` records each route it will change (its actions as read) in
`ctx.memory` before the first ModifyListener/ModifyRule, then changes only the
forward weights (`traffic.switched`). Each write is decided from the live
route: already as planned (skip), still as recorded (write), anything else
(someone else changed it: stop and say which). So a resumed step finishes a
half-done switch, and a switch-back restores exactly what was recorded.

Phases kept in memory: `switching` (recorded, writes under way), `switched`,
`verified` (done: a resume reports "already"), `switching_back` and
`switched_back` (post-switch health failed). After the switch the now-live
group's target health must reach `healthy` and the load balancer's health URL
must pass within `verify_timeout`; otherwise every route goes back to its
recorded actions.

Forcing passes the pre-switch gate, never silently: a forced plan names the
gates failing when it was planned (in its notes and its description, which
the approval is bound to), the run prints each failing gate as FAILED with
"switching anyway", and the summary says what the switch was forced past.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import field
from datetime import UTC, datetime
from typing import Any

from actions.base import (
    ActionError,
    Check,
    PermanentError,
    Step,
    StepContext,
    StepResult,
    fixed,
    given,
)
from actions.http.health import poll_health
from actions.loadbalancer.health import NO_TARGETS, await_healthy, gate_checks
from actions.loadbalancer.params import BlueGreenParams, Colour, other
from actions.loadbalancer.stable import mark_healthy
from actions.loadbalancer.traffic import (
    Actions,
    Route,
    describe_weights,
    group_name,
    read_routes,
    same_routing,
    switched,
    write_route,
)

ClientFactory = Callable[[], Any]
SWITCH_BACK_RESERVE = 30.0


def memory_key(params: BlueGreenParams) -> str:
    """Return the memory key under which a switch of `params`' routes is recorded."""
    return f"loadbalancer.switch:{params.scope}"


def live_routes(client: Any, params: BlueGreenParams) -> list[Route]:
    """Read the routes `params` covers."""
    return read_routes(
        client, load_balancer_arn=params.load_balancer_arn, listener_arns=params.listeners
    )


def names(params: BlueGreenParams) -> dict[str, str]:
    """Return {target group ARN: colour} for describing weights."""
    return {params.blue.target_group_arn: "blue", params.green.target_group_arn: "green"}


class SwitchTraffic(Step):
    """Send every route's traffic for the bad colour to the stable one; verify; else switch back."""

    name: str = fixed("loadbalancer.switch_traffic")
    idempotent: bool = fixed(True)
    timeout: float = fixed(0.0)
    """Set from the params: the verification, the switch and the reserve to switch back."""
    params: BlueGreenParams = given(kw_only=False)
    clients: ClientFactory = given(kw_only=False)
    to_colour: Colour
    reason: str
    planned: list[Route]
    force: bool = False
    failing: list[str] = field(default_factory=list)
    """The pre-switch health gates that failed when a forced switch was planned."""

    def __post_init__(self) -> None:
        self.timeout = self.params.verify_timeout + 60.0 + SWITCH_BACK_RESERVE

    def describe(self) -> str:
        """Name the stable group and why, each route's change, and the gates."""
        stable = self.params.group(self.to_colour)
        labels = names(self.params)
        changes = "; ".join(
            f"{r.label} ({describe_weights(r.actions, labels)} -> {self.to_colour} 100%)"
            for r in self.planned
        )
        text = (
            f"Send all traffic to {self.to_colour} ({stable}), because {self.reason}: {changes}; "
            "only forward weights change, every other action and its order is kept"
        )
        if self.failing:
            text += (
                f"; forced although {self.to_colour}'s pre-switch health fails: "
                + "; ".join(self.failing)
                + " (a group with no registered targets is still refused)"
            )
        elif self.force:
            text += (
                f"; pre-switch health of {self.to_colour} (its health URL and target states) "
                "reported, not required (forced); a group with no registered targets is "
                "still refused"
            )
        verify = f"target health of {group_name(stable)} must reach healthy"
        if self.params.lb_health_url:
            verify += f" and {self.params.lb_health_url} must pass"
        return f"{text}; then {verify}, else every route is switched back"

    def run(self, ctx: StepContext) -> StepResult:
        """Switch (or finish a switch), verify, and switch back if verification fails."""
        client = self.clients()
        key = memory_key(self.params)
        record = ctx.memory.get(key)
        if record is None:
            record = self._start(client, ctx)
        if record["phase"] == "verified":
            return StepResult(
                summary=f"already switched to {self.to_colour} and verified",
                skipped=True,
                data=self._data(record),
            )
        if record["phase"] in ("switching_back", "switched_back"):
            self._switch_back(client, ctx, record, failure=record.get("failure", ""))
        lines = list(record.get("gate", []))
        if record["phase"] == "switching":
            written = _apply(client, self.params, record, forward=True)
            for line in written:
                ctx.emit(line)
            lines += written
            self._save(ctx, record, phase="switched")
        lines.append(self._verify(client, ctx, record))
        summary = f"traffic switched to {self.to_colour}"
        if record.get("forced_past"):
            summary += (
                " (forced past failing pre-switch health: "
                + "; ".join(record["forced_past"])
                + "; verified healthy after the switch)"
            )
        return StepResult(
            summary=summary,
            output="\n".join(lines),
            data=self._data(record),
        )

    def _start(self, client: Any, ctx: StepContext) -> dict[str, Any]:
        bad = self.params.group(other(self.to_colour))
        routes = [r for r in live_routes(client, self.params) if r.sends_to(bad)]
        self._same_as_planned(routes)
        gate, forced_past = self._gate(client)
        for line in gate:
            ctx.emit(line)
        record = {
            "to": self.params.group(self.to_colour),
            "phase": "switching",
            "gate": gate,
            "forced_past": forced_past,
            "routes": [r.to_json() for r in routes],
        }
        ctx.memory[memory_key(self.params)] = record
        return record

    def _same_as_planned(self, routes: list[Route]) -> None:
        planned = {r.arn: r for r in self.planned}
        now = {r.arn: r for r in routes}
        changed = [
            r.label
            for r in self.planned
            if r.arn not in now or not same_routing(now[r.arn].actions, r.actions)
        ] + [r.label for r in routes if r.arn not in planned]
        if changed:
            raise PermanentError(
                "the load balancer changed since the plan was approved "
                f"({', '.join(changed)}): nothing was switched; plan the rollback again"
            )

    def _gate(self, client: Any) -> tuple[list[str], list[str]]:
        """Check the colour before the switch: (output lines, the failures a force passes)."""
        side = self.params.side(self.to_colour)
        checks = gate_checks(client, colour=self.to_colour, side=side)
        lines = [_line(c, forced=self.force) for c in checks]
        empty = [c for c in checks if not c.ok and NO_TARGETS in c.detail]
        failed = empty or ([] if self.force else [c for c in checks if not c.ok])
        if failed:
            reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            raise PermanentError(
                f"refusing to switch to {self.to_colour}: {reasons}; nothing was switched"
            )
        return lines, [f"{c.name}: {c.detail}" for c in checks if not c.ok]

    def _verify(self, client: Any, ctx: StepContext, record: dict[str, Any]) -> str:
        budget = min(self.params.verify_timeout, max(0.0, ctx.remaining() - SWITCH_BACK_RESERVE))
        deadline = time.monotonic() + budget
        settled = await_healthy(client, record["to"], deadline=deadline)
        if not settled.ok:
            self._switch_back(client, ctx, record, failure=settled.detail)
        lines = [f"verified: {settled.detail}"]
        url = self.params.lb_health_url
        if url:
            health = poll_health(url, deadline=deadline)
            if not health.ok:
                failure = f"{health.detail} ({health.attempts} tries in {health.elapsed:.1f}s)"
                self._switch_back(client, ctx, record, failure=failure)
            lines.append(f"verified: {health.detail} after {health.elapsed:.1f}s")
        self._save(ctx, record, phase="verified")
        lines.append(self._tag(client, record["to"]))
        return "\n".join(lines)

    def _tag(self, client: Any, arn: str) -> str:
        try:
            mark_healthy(client, arn, datetime.now(UTC))
        except ActionError as exc:
            return f"warning: could not record {group_name(arn)} as last known healthy: {exc}"
        return f"recorded {group_name(arn)} as last known healthy"

    def _switch_back(
        self, client: Any, ctx: StepContext, record: dict[str, Any], *, failure: str
    ) -> None:
        self._save(ctx, record, phase="switching_back", failure=failure)
        try:
            lines = _apply(client, self.params, record, forward=False)
        except ActionError as exc:
            raise PermanentError(
                f"after switching to {self.to_colour}: {failure}; switching back failed: {exc}; "
                f"traffic may still go to {self.to_colour}: restore the routes recorded in this "
                "step's memory by hand"
            ) from exc
        for line in lines:
            ctx.emit(line)
        self._save(ctx, record, phase="switched_back")
        labels = ", ".join(r["label"] for r in record["routes"])
        raise PermanentError(
            f"after switching to {self.to_colour}: {failure}; switched back {labels} "
            "to what they were"
        )

    def _save(self, ctx: StepContext, record: dict[str, Any], **changes: Any) -> None:
        record.update(changes)
        ctx.memory[memory_key(self.params)] = dict(record)

    def _data(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "to_colour": self.to_colour,
            "to_target_group": record["to"],
            "reason": self.reason,
            "previous_routes": record["routes"],
        }


def _line(check: Check, *, forced: bool) -> str:
    if check.ok:
        return f"ok: {check.name}: {check.detail}"
    suffix = " (forced: switching anyway)" if forced else ""
    return f"FAILED: {check.name}: {check.detail}{suffix}"


def _apply(
    client: Any, params: BlueGreenParams, record: dict[str, Any], *, forward: bool
) -> list[str]:
    """Bring each recorded route to its switched (or, backwards, recorded) actions."""
    live = {r.arn: r for r in live_routes(client, params)}
    lines = []
    for stored in record["routes"]:
        route = Route.from_json(stored)
        after = switched(route.actions, stable=record["to"])
        goal, start = (after, route.actions) if forward else (route.actions, after)
        lines.append(_bring(client, params, route, live.get(route.arn), goal=goal, start=start))
    return lines


def _bring(
    client: Any,
    params: BlueGreenParams,
    route: Route,
    now: Route | None,
    *,
    goal: Actions,
    start: Actions,
) -> str:
    labels = names(params)
    if now is None:
        raise PermanentError(f"{route.label} ({route.arn}) no longer exists; check it by hand")
    if same_routing(now.actions, goal):
        return f"{route.label} already forwards {describe_weights(goal, labels)}"
    if not same_routing(now.actions, start):
        raise PermanentError(
            f"{route.label} was changed by someone else: it forwards "
            f"{describe_weights(now.actions, labels)}, expected "
            f"{describe_weights(start, labels)}; left as it is: check it by hand"
        )
    write_route(client, route, goal)
    return f"{route.label} now forwards {describe_weights(goal, labels)}"


class RestoreTraffic(Step):
    """Put routes back to actions a SwitchTraffic recorded (an undo after a good switch)."""

    name: str = fixed("loadbalancer.restore_traffic")
    idempotent: bool = fixed(True)
    timeout: float = given(default=60.0)
    params: BlueGreenParams = given(kw_only=False)
    clients: ClientFactory = given(kw_only=False)
    routes: list[Route]

    def describe(self) -> str:
        """Name each route and where it will forward again."""
        labels = names(self.params)
        parts = [f"{r.label} to {describe_weights(r.actions, labels)}" for r in self.routes]
        return "Restore " + "; ".join(parts)

    def run(self, ctx: StepContext) -> StepResult:
        """Write back each route whose live actions differ from the recorded ones."""
        client = self.clients()
        live = {r.arn: r for r in live_routes(client, self.params)}
        lines, changed = [], 0
        for route in self.routes:
            now = live.get(route.arn)
            if now is None:
                raise PermanentError(f"{route.label} ({route.arn}) no longer exists")
            if same_routing(now.actions, route.actions):
                lines.append(f"{route.label} already as recorded")
                continue
            write_route(client, route, route.actions)
            changed += 1
            lines.append(f"{route.label} restored")
        summary = f"restored {changed} of {len(self.routes)} routes"
        if not changed:
            summary = "already restored: every route forwards as recorded"
        return StepResult(summary=summary, output="\n".join(lines), skipped=not changed)
