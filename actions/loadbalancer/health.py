"""Health gates that hold on real AWS: target states before and after a switch.

States and reasons are the service model's (botocore/data/elbv2/2015-12-01/
service-2.json, shapes `TargetHealthStateEnum` and `TargetHealthReasonEnum`)
as AWS documents them in "Check the health of your targets"
(docs.aws.amazon.com/elasticloadbalancing/latest/application/check-target-health.html):

- `unused` with `Target.NotInUse`: the target group is not used by any load
  balancer (or the target's zone is not enabled). That is the idle colour of a
  blue-green pair, so the load balancer has no opinion of it: the gate asks
  the colour's own health URL instead, and refuses when none is configured.
- `unused` for any other reason (`Target.NotRegistered`, `Target.InvalidState`
  for a stopped instance, `Target.IpUnusable`), `initial`, `unhealthy`,
  `unhealthy.draining`, `draining`, `unavailable`: refused with the reason.
- no registered target at all: refused, forced or not (an empty group answers
  every request with 503).

After the switch the now-live group is in use, so its targets pass through
`initial` to `healthy` ("After your target is registered, it must pass one
health check to be considered healthy": Health checks for your target groups,
docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html,
so `verify_timeout` must exceed the group's HealthCheckIntervalSeconds, 30 s by
default); the verification polls DescribeTargetHealth until all are healthy,
and anything else when time is up fails it. moto reports
`healthy` at once, so the tests replay recorded answers for the other states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from actions import voice
from actions.aws import aws_errors
from actions.base import Check
from actions.http.health import check_health
from actions.loadbalancer.params import Colour, Side
from actions.loadbalancer.traffic import group_name

POLL_START = 0.25
POLL_MAX = 5.0
IDLE = ("unused", "Target.NotInUse")
NO_TARGETS = "no registered targets"


@dataclass(frozen=True)
class TargetState:
    """One target's health as DescribeTargetHealth reports it."""

    where: str
    state: str
    reason: str = ""
    description: str = ""

    @property
    def idle(self) -> bool:
        """True for `unused` because no load balancer uses the group (the idle colour)."""
        return (self.state, self.reason) == IDLE

    def __str__(self) -> str:
        why = " ".join(p for p in (self.reason, self.description) if p)
        return f"{self.where} {self.state}" + (f" ({why})" if why else "")


def target_states(client: Any, target_group_arn: str) -> list[TargetState]:
    """Describe the health of every target registered in `target_group_arn`."""
    with aws_errors(f"describe target health of {group_name(target_group_arn)}"):
        found = client.describe_target_health(TargetGroupArn=target_group_arn)
    states = []
    for item in found["TargetHealthDescriptions"]:
        target, health = item["Target"], item["TargetHealth"]
        where = f"{target['Id']}:{target.get('Port', '')}".rstrip(":")
        states.append(
            TargetState(
                where, health["State"], health.get("Reason", ""), health.get("Description", "")
            )
        )
    return states


def gate_checks(client: Any, *, colour: Colour, side: Side) -> list[Check]:
    """Check the colour's health URL (once) and its targets, before traffic goes to it."""
    url = health_url_check(colour=colour, side=side)
    return [c for c in (url, targets_check(client, colour=colour, side=side, url=url)) if c]


def targets_check(client: Any, *, colour: Colour, side: Side, url: Check | None) -> Check:
    """Check the colour's targets: registered, and healthy or idle with a passing health URL."""
    name = f"{colour} targets registered and healthy"
    group = group_name(side.target_group_arn)
    states = target_states(client, side.target_group_arn)
    if not states:
        return Check(name, False, f"{group} has {NO_TARGETS}")
    bad = [str(s) for s in states if s.state != "healthy" and not s.idle]
    if bad:
        count = f"{len(bad)} of {len(states)} targets not healthy"
        return Check(name, False, f"{group}: {count}: " + "; ".join(bad))
    idle = [s for s in states if s.idle]
    if not idle:
        return Check(name, True, f"{group}: {len(states)} healthy")
    if url is None:
        return Check(
            name,
            False,
            f"{group}: {len(idle)} targets unused (Target.NotInUse: no listener uses the "
            f"group) and no health_url configured for {colour} to check them through",
        )
    detail = (
        f"{group}: {len(idle)} of {len(states)} targets unused (Target.NotInUse: idle "
        f"colour); its health URL: {url.detail}"
    )
    return Check(name, url.ok, detail)


def health_url_check(*, colour: Colour, side: Side) -> Check | None:
    """Probe the colour's own health URL once, if one is configured."""
    if not side.health_url:
        return None
    health = check_health(side.health_url)
    return Check(f"{colour} health URL passes", health.ok, health.detail)


@dataclass(frozen=True)
class Settled:
    """How the now-live group's targets ended: all healthy, or the last states seen."""

    ok: bool
    detail: str
    polls: int


def await_healthy(client: Any, target_group_arn: str, *, deadline: float) -> Settled:
    """Poll the group's target health until every target is `healthy` or `deadline` passes."""
    delay, polls = POLL_START, 0
    group = group_name(target_group_arn)
    while True:
        polls += 1
        states = target_states(client, target_group_arn)
        if states and all(s.state == "healthy" for s in states):
            return Settled(True, f"{group}: {len(states)} targets healthy", polls)
        left = deadline - time.monotonic()
        if left <= 0:
            shown = "; ".join(str(s) for s in states) or "no registered targets"
            return Settled(False, f"{group} targets not healthy: {shown}", polls)
        healthy = sum(s.state == "healthy" for s in states)
        voice.say(f"{group}: {healthy} of {len(states)} targets healthy")
        time.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX)
