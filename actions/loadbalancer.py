"""Blue-green rollback: switch an ALB listener between two target groups (boto3 elbv2)."""

from __future__ import annotations

from typing import Literal

from actions.params import AwsConnection, Strict


class Side(Strict):
    """One colour of a blue-green pair."""

    target_group_arn: str
    health_url: str | None = None


class BlueGreenParams(Strict):
    """A listener and the two target groups it can forward to."""

    kind: Literal["bluegreen"]
    listener_arn: str
    blue: Side
    green: Side
    lb_health_url: str | None = None
    aws: AwsConnection = AwsConnection()
