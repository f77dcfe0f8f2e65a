"""The people, the incident channel and the rollback config the tests share; a hand-moved clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

ALICE, BOB, CAROL, MALLORY = "UALICE0001", "UBOB000001", "UCAROL0001", "UMALLORY01"
DAVE = "UDAVE00001"
CHANNEL = "C0INCIDENT"
PEOPLE = {ALICE: "alice", BOB: "bob", CAROL: "carol", MALLORY: "mallory", DAVE: "dave"}


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 3, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def config_dict(**prod: Any) -> dict[str, Any]:
    """A config with prod (app, db, full) and staging, overridable per test."""
    env: dict[str, Any] = {
        "incident_channel": CHANNEL,
        "approvers": {"users": [BOB, CAROL], "groups": ["SDBAS00001"]},
        "approvals_required": 1,
        "approval_ttl_minutes": 30,
        "break_glass": True,
        "targets": {
            "app": {"kind": "kubernetes", "namespace": "voxflow-prod", "deployment": "voxflow-api"},
            "db": {
                "kind": "database",
                "connection": {"dbname": "voxflow_prod"},
                "backups": "/backups",
            },
            "full": {"kind": "full", "targets": ["db", "app"]},
        },
    }
    env.update(prod)
    return {"environments": {"prod": env}}
