"""The blue-green target: points, checks and plans from the whole traffic model.

Rollback points are the two colours. The colour the default rollback goes to
(`stable.choose`) is the one point neither current nor avoided, so the modal's
and monitoring's default (`bot.domain.plans.default_point`) is the same as
`plan(None)`; when the bot cannot tell which colour is stable, both points are
avoided and there is no default: a person picks one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from actions.aws import aws_client
from actions.base import (
    Action,
    ActionError,
    Check,
    PlanningError,
    RollbackPoint,
    TargetPlan,
    rebuild_step,
)
from actions.loadbalancer.health import NO_TARGETS, gate_checks, target_states
from actions.loadbalancer.params import COLOURS, BlueGreenParams, Colour, other
from actions.loadbalancer.stable import Choice, Traffic, choose, read_tags
from actions.loadbalancer.steps import (
    ClientFactory,
    RestoreTraffic,
    SwitchTraffic,
    live_routes,
    names,
)
from actions.loadbalancer.traffic import Route, describe_weights, group_name


class BlueGreenTarget:
    """Listeners and rules forwarding to blue or green; a rollback sends all to the stable one."""

    def __init__(self, params: BlueGreenParams, *, clients: ClientFactory | None = None) -> None:
        self.params = params
        self.clients: ClientFactory = clients or (lambda: aws_client(params.aws, "elbv2"))

    def points(self) -> list[RollbackPoint]:
        """List blue and green with their shares; the default is the stable colour."""
        client = self.clients()
        routes, traffic, choice, why = self._model(client)
        points = [self._point(c, routes, traffic, choice, why) for c in COLOURS]
        return [self._serving(client, p) if p.is_current else p for p in points]

    def _serving(self, client: Any, point: RollbackPoint) -> RollbackPoint:
        """The live colour, with what of its target group is not healthy (`unready`).

        A colour runs only when its targets serve: every target registered in its group
        `healthy` by DescribeTargetHealth (service model shape `TargetHealthDescription`,
        botocore/data/elbv2/2015-12-01/service-2.json). What could not be read is named.
        """
        group = self.params.group(cast(Colour, point.ref))
        try:
            states = target_states(client, group)
        except ActionError as exc:
            return replace(point, unready=f"its target health could not be read ({exc})")
        if not states:
            return replace(point, unready=f"{group_name(group)} has {NO_TARGETS}")
        bad = [str(s) for s in states if s.state != "healthy"]
        if not bad:
            return point
        count = f"{len(bad)} of its {len(states)} targets in {group_name(group)} not healthy"
        return replace(point, unready=f"{count}: " + "; ".join(bad))

    def checks(self, ref: str | None) -> list[Check]:
        """Check the routes can be read, the stable colour is known, and it is healthy."""
        try:
            client = self.clients()
            routes = live_routes(client, self.params)
            traffic = Traffic.of(routes, self.params)
            readable = Check("listeners readable", True, traffic.summary or "no blue/green traffic")
            choice = self._choose(client, ref, traffic)
        except ActionError as exc:
            return [Check("listeners readable and stable colour known", False, str(exc))]
        side = self.params.side(choice.to_colour)
        gates = gate_checks(client, colour=choice.to_colour, side=side)
        known = Check("stable colour known", True, f"{choice.to_colour}: {choice.reason}")
        return [readable, known, *gates]

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Send all traffic to `ref` (None: stable); `force` skips the pre-switch gate."""
        try:
            client = self.clients()
            routes = live_routes(client, self.params)
            traffic = Traffic.of(routes, self.params)
            choice = self._choose(client, ref, traffic)
            failing = self._failing_gates(client, choice.to_colour) if force else []
        except PlanningError:
            raise
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        bad = self.params.group(other(choice.to_colour))
        planned = [r for r in routes if r.sends_to(bad)]
        step = SwitchTraffic(
            self.params,
            self.clients,
            to_colour=choice.to_colour,
            reason=choice.reason,
            planned=planned,
            force=force,
            failing=failing,
        )
        notes = [f"stable: {choice.to_colour}, because {choice.reason}"]
        notes += [self._left_alone(r) for r in routes if not r.sends_to(bad)]
        if failing:
            notes.append(
                f"forced past failing health: traffic goes to {choice.to_colour} although "
                + "; ".join(failing)
                + "; post-switch verification and switch-back still apply"
            )
        elif force:
            notes.append(
                f"forced: {choice.to_colour}'s pre-switch health is reported, not required; "
                "post-switch verification and switch-back still apply"
            )
        return TargetPlan(rollback=[step], notes=notes)

    def _failing_gates(self, client: Any, colour: Colour) -> list[str]:
        """The pre-switch health gates of `colour` that fail now (a forced plan names them)."""
        checks = gate_checks(client, colour=colour, side=self.params.side(colour))
        return [f"{c.name} fails: {c.detail}" for c in checks if not c.ok]

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild a switch or a restore from its stored spec."""
        steps = (SwitchTraffic, RestoreTraffic)
        return rebuild_step(
            steps, "a bluegreen target", name, spec, params=self.params, clients=self.clients
        )

    def _choose(self, client: Any, ref: str | None, traffic: Traffic) -> Choice:
        tags: dict[str, dict[str, str]] = {}
        if traffic.split and self.params.stable is None:
            tags = read_tags(client, [self.params.group(c) for c in COLOURS])
        return choose(ref=ref, traffic=traffic, params=self.params, tags=tags)

    def _model(self, client: Any) -> tuple[list[Route], Traffic, Choice | None, str]:
        """The routes, their traffic and the default choice (or why there is none)."""
        routes = live_routes(client, self.params)
        traffic = Traffic.of(routes, self.params)
        try:
            return routes, traffic, self._choose(client, None, traffic), ""
        except PlanningError as exc:
            return routes, traffic, None, str(exc)

    def _point(
        self,
        colour: Colour,
        routes: list[Route],
        traffic: Traffic,
        choice: Choice | None,
        why: str,
    ) -> RollbackPoint:
        arn = self.params.group(colour)
        coloured = [r for r in routes if any(r.sends_to(self.params.group(c)) for c in COLOURS)]
        shares = ", ".join(f"{r.label} {r.share(arn)}%" for r in coloured)
        label = f"{colour} · {group_name(arn)} · {shares or 'no traffic'}"
        if choice is None:
            return RollbackPoint(ref=colour, label=label, avoid=why or "no stable colour known")
        if colour == choice.to_colour:
            return RollbackPoint(ref=colour, label=f"{label} · stable: {choice.reason}")
        current = colour in traffic.live
        return RollbackPoint(
            ref=colour,
            label=label,
            is_current=current,
            avoid=f"rolled away from: {choice.to_colour} is stable ({choice.reason})",
        )

    def _left_alone(self, route: Route) -> str:
        kind = route.final_type()
        if kind != "forward":
            return f"{route.label} ends in a {kind} action: left alone"
        where = describe_weights(route.actions, names(self.params))
        return f"{route.label} forwards {where}, not to the colour rolled away from: left alone"
