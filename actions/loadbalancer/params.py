"""The blue-green target's parameters: where traffic is routed, the two colours, which is stable.

A target names a load balancer (every listener of it is read), or listeners
(`listener_arns`, or one `listener_arn` as older configs do), or both (the
named listeners of that load balancer). `stable` names the colour a canary
rolls back to; without it the bot looks at the tags it defines
(`actions.loadbalancer.stable`) and otherwise refuses to guess.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from actions.params import AwsConnection, Strict

Colour = Literal["blue", "green"]
COLOURS: tuple[Colour, Colour] = ("blue", "green")


def other(colour: Colour) -> Colour:
    """Return the colour that is not `colour`."""
    return "green" if colour == "blue" else "blue"


class Side(Strict):
    """One colour: its target group and the URL that answers for it directly."""

    target_group_arn: str
    health_url: str | None = None


class BlueGreenParams(Strict):
    """The listeners to switch, the two target groups, and how to verify a switch.

    `verify_timeout` bounds the post-switch polling (target health of the now-live
    group and the load balancer's health URL); it must exceed the target group's
    health-check interval (30 s by default on AWS); the step keeps time beyond it to
    switch back.
    """

    kind: Literal["bluegreen"]
    load_balancer_arn: str | None = None
    listener_arns: list[str] = []
    listener_arn: str | None = None
    blue: Side
    green: Side
    stable: Colour | None = None
    lb_health_url: str | None = None
    aws: AwsConnection = AwsConnection()
    verify_timeout: float = 60.0

    @model_validator(mode="after")
    def _where(self) -> BlueGreenParams:
        if not (self.load_balancer_arn or self.listener_arns or self.listener_arn):
            raise ValueError("give 'load_balancer_arn', 'listener_arns' or 'listener_arn'")
        if self.listener_arn and self.listener_arns:
            raise ValueError("give 'listener_arns' or 'listener_arn', not both")
        if self.blue.target_group_arn == self.green.target_group_arn:
            raise ValueError("blue and green must be different target groups")
        return self

    @property
    def listeners(self) -> list[str]:
        """The listener ARNs named in the config (empty: every listener of the load balancer)."""
        return list(self.listener_arns) or ([self.listener_arn] if self.listener_arn else [])

    @property
    def scope(self) -> str:
        """Name what this target switches, for people and as a memory key."""
        if self.listeners:
            return "listeners " + ", ".join(self.listeners)
        return f"load balancer {self.load_balancer_arn}"

    def side(self, colour: Colour) -> Side:
        """Return the side of `colour`."""
        return self.blue if colour == "blue" else self.green

    def group(self, colour: Colour) -> str:
        """Return the target group ARN of `colour`."""
        return self.side(colour).target_group_arn

    def colour_of(self, target_group_arn: str) -> Colour | None:
        """Return the colour whose target group is `target_group_arn`, if any."""
        for colour in COLOURS:
            if self.group(colour) == target_group_arn:
                return colour
        return None
