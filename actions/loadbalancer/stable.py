"""Which colour a rollback goes to, and why; never the heaviest group by weight alone.

A 90/10 canary sends most traffic to the stable group and a little to the new
one, so "the heaviest group is current, roll back to the other" sends all
traffic to the canary. The rules, in order:

1. an explicit choice (the colour a person picked) wins;
2. one colour takes all routed traffic: the other one, the idle colour, is
   where blue-green rolls back to (unless the config names the live one stable);
3. the config's `stable` colour;
4. the tag `rollback-bot:last-healthy` (an ISO time), which the bot writes on a
   group after a switch to it was verified healthy: the newest one counts,
   unless the same group's `rollback-bot:deployed-at` is later (deployed since);
5. the tag `rollback-bot:deployed-at` (an ISO time, written by the deploy
   pipeline): the colour with the older deployment;
6. otherwise refuse and say how to tell the bot.

Tags are read with DescribeTags and written with AddTags (service model
shapes `Tag`, `TagDescription`; keys may hold `:`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from actions.aws import aws_errors
from actions.base import PlanningError
from actions.loadbalancer.params import COLOURS, BlueGreenParams, Colour, other
from actions.loadbalancer.traffic import Route, group_name

LAST_HEALTHY_TAG = "rollback-bot:last-healthy"
DEPLOYED_AT_TAG = "rollback-bot:deployed-at"


@dataclass(frozen=True)
class Choice:
    """The colour to send all traffic to, the colour rolled away from, and why."""

    to_colour: Colour
    reason: str


@dataclass(frozen=True)
class Traffic:
    """Which colours the routes send traffic to, and where they split."""

    live: frozenset[Colour]
    split: bool
    summary: str

    @classmethod
    def of(cls, routes: list[Route], params: BlueGreenParams) -> Traffic:
        """Summarise the routes' traffic to blue and green."""
        live: set[Colour] = set()
        split = False
        parts = []
        for route in routes:
            colours = [c for c in COLOURS if route.sends_to(params.group(c))]
            live.update(colours)
            split = split or len(colours) == 2
            if colours:
                shares = ", ".join(f"{c} {route.share(params.group(c))}%" for c in colours)
                parts.append(f"{route.label}: {shares}")
        return cls(frozenset(live), split, "; ".join(parts))


def choose(
    *, ref: str | None, traffic: Traffic, params: BlueGreenParams, tags: dict[str, dict[str, str]]
) -> Choice:
    """Resolve `ref` (None: decide) into the colour to switch to, or raise PlanningError."""
    if not traffic.live:
        raise PlanningError(f"no listener or rule of {params.scope} forwards to blue or green")
    if ref is not None:
        chosen = _explicit(ref, traffic)
        try:
            default = choose(ref=None, traffic=traffic, params=params, tags=tags)
        except PlanningError:
            return chosen
        if default.to_colour == chosen.to_colour:
            return default
        against = f"against the default, {default.to_colour}: {default.reason}"
        return Choice(chosen.to_colour, f"{chosen.reason}, {against}")
    if not traffic.split and len(traffic.live) == 1:
        (live,) = traffic.live
        if params.stable == live:
            raise PlanningError(f"all traffic already goes to {live}, the stable colour (config)")
        return Choice(other(live), f"{live} takes all traffic; {other(live)} is the idle colour")
    if params.stable is not None:
        return Choice(params.stable, f"the config names {params.stable} as stable")
    return _by_tags(traffic, params, tags)


def _explicit(ref: str, traffic: Traffic) -> Choice:
    if ref not in COLOURS:
        raise PlanningError(f"unknown colour {ref!r}: choose blue or green")
    colour: Colour = "blue" if ref == "blue" else "green"
    if traffic.live == {colour}:
        raise PlanningError(f"{colour} already takes all traffic")
    return Choice(colour, f"{colour} was chosen")


def _by_tags(traffic: Traffic, params: BlueGreenParams, tags: dict[str, dict[str, str]]) -> Choice:
    healthy = {c: _time(tags, params.group(c), LAST_HEALTHY_TAG) for c in COLOURS}
    deployed = {c: _time(tags, params.group(c), DEPLOYED_AT_TAG) for c in COLOURS}
    fresh = {
        c: at
        for c, at in healthy.items()
        if at is not None and not _deployed_since(deployed[c], at)
    }
    if fresh:
        best = max(fresh, key=lambda c: fresh[c])
        if list(fresh.values()).count(fresh[best]) == 1:
            when = fresh[best].isoformat()
            return Choice(best, f"{best} was last verified healthy ({LAST_HEALTHY_TAG} {when})")
    blue_at, green_at = deployed["blue"], deployed["green"]
    if blue_at is not None and green_at is not None and blue_at != green_at:
        older: Colour = "blue" if blue_at < green_at else "green"
        return Choice(
            older,
            f"{older} runs the older deployment ({DEPLOYED_AT_TAG} blue {blue_at.isoformat()}, "
            f"green {green_at.isoformat()})",
        )
    raise PlanningError(
        f"traffic is split ({traffic.summary}) and nothing says which colour is stable: "
        f"set 'stable' in the target's config, tag the stable target group "
        f"{LAST_HEALTHY_TAG} or both groups {DEPLOYED_AT_TAG} (ISO times), "
        "or choose blue or green explicitly"
    )


def _deployed_since(deployed: datetime | None, healthy: datetime) -> bool:
    return deployed is not None and deployed > healthy


def _time(tags: dict[str, dict[str, str]], arn: str, key: str) -> datetime | None:
    value = tags.get(arn, {}).get(key)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PlanningError(
            f"target group {group_name(arn)} has tag {key}={value!r}, which is not an ISO time"
        ) from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def read_tags(client: Any, arns: list[str]) -> dict[str, dict[str, str]]:
    """Return {ARN: {key: value}} of the target groups' tags."""
    with aws_errors("describe target group tags"):
        found = client.describe_tags(ResourceArns=arns)["TagDescriptions"]
    return {
        d["ResourceArn"]: {t["Key"]: t.get("Value", "") for t in d.get("Tags", [])} for d in found
    }


def mark_healthy(client: Any, arn: str, at: datetime) -> None:
    """Tag `arn` as verified healthy at `at` (what rule 4 reads next time)."""
    with aws_errors(f"tag {group_name(arn)} {LAST_HEALTHY_TAG}"):
        client.add_tags(
            ResourceArns=[arn], Tags=[{"Key": LAST_HEALTHY_TAG, "Value": at.isoformat()}]
        )
