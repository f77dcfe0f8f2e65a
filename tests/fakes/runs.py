"""A run record to render and the text of rendered Block Kit, for the tests of what people read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.persistence.models import Run


def a_run(steps: int, *, description: str = "do a thing") -> Run:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    plan = [
        {
            "position": i,
            "phase": "rollback",
            "name": f"step{i}",
            "description": description,
            "always": False,
            "idempotent": True,
            "timeout": 5,
        }
        for i in range(steps)
    ]
    return Run(
        id="r1",
        incident_id="INC-20261124-000000",
        environment="prod",
        target="app",
        point="1",
        plan=plan,
        plan_hash="a" * 64,
        requester="UALICE0001",
        state="requested",
        approvals_required=1,
        created_at=now,
        expires_at=now + timedelta(minutes=30),
        memory={},
        slack={},
        force=False,
        break_glass=False,
        outcome="",
    )


def texts(built: list) -> list[str]:  # type: ignore[type-arg]
    found = []
    for block in built:
        data = block.to_dict()
        if isinstance(data.get("text"), dict):
            found.append(data["text"]["text"])
        if data.get("type") == "context":
            found += [e["text"] for e in data["elements"] if "text" in e]
    return found
