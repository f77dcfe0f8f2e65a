"""typed run: a run's kind, versions, verdicts and choices are columns; states are constrained

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-07 13:40:00

A run's memory is what its steps keep for later steps and for a resume. It also
carried facts about the run itself, each under its own string key read by
modules in three layers: the drill marker (`drill`), the verdicts shown with the
plan (`verdicts`), the from/to versions (`versions`), when the plan went stale
(`plan_stale_at`), how often it was retried (`retries`) and the request's choices
(`leave_maintenance_on`, `notify_customers`). They become typed columns of `runs`,
and every existing row's facts move out of its memory; the downgrade moves them back.

`kind` says what the run is: a drill (its memory carried `drill`), monitoring's own
(requested by `monitoring`), else a rollback people requested. A drill's `drill`
entry held only the version the drill rolls forward to, which its plan's marker step
stores too (`spec.ref`), so the downgrade takes it from there.

The state columns are constrained to their enum's values (bot/domain/states.py), as
they were at this revision: a later state is a later migration. SQLite changes a
constraint by copying the table (alembic's batch mode); `bot.persistence.store.upgrade`
turns SQLite's foreign key enforcement off around it, as SQLite's own procedure for
such changes says, and checks the keys before committing.
"""

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None

DRILL, MARKER = "drill", "drill.marker"
VERDICTS, VERSIONS, STALE, RETRIES = "verdicts", "versions", "plan_stale_at", "retries"
LEAVE, NOTIFY = "leave_maintenance_on", "notify_customers"
MONITORING = "monitoring"

STATES = {
    "runs": (
        "requested",
        "approved",
        "running",
        "succeeded",
        "failed",
        "rejected",
        "expired",
        "cancelled",
    ),
    "steps": ("pending", "running", "succeeded", "skipped", "failed", "interrupted", "not run"),
    "rechecks": ("pending", "checking", "done", "dropped", "failed"),
    "target_versions": ("healthy", "rolled away"),
    "outbox": ("pending", "sent", "failed", "superseded"),
}
KINDS = ("rollback", "drill", "automatic")

runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("requester", sa.String),
    sa.column("plan", sa.JSON),
    sa.column("memory", sa.JSON),
    sa.column("kind", sa.String),
    sa.column("from_version", sa.Text),
    sa.column("to_version", sa.Text),
    sa.column("from_key", sa.Text),
    sa.column("to_key", sa.Text),
    sa.column("verdicts", sa.JSON(none_as_null=True)),
    sa.column("plan_stale_at", sa.DateTime),
    sa.column("retries", sa.Integer),
    sa.column("leave_maintenance_on", sa.Boolean),
    sa.column("notify_customers", sa.Boolean),
)


def _json(value: object) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _typed(memory: dict[str, Any], requester: str) -> dict[str, Any]:
    """The run's facts, taken out of `memory` (which keeps only step memory)."""
    drill = memory.pop(DRILL, None)
    kind = "drill" if isinstance(drill, dict) else "rollback"
    if kind == "rollback" and requester == MONITORING:
        kind = "automatic"
    versions = memory.pop(VERSIONS, None)
    versions = versions if isinstance(versions, dict) else {}
    stale = memory.pop(STALE, None)
    at = datetime.fromisoformat(stale) if isinstance(stale, str) else None
    if at is not None and at.tzinfo is not None:  # naive UTC, as models.UTCDateTime stores it
        at = at.astimezone(UTC).replace(tzinfo=None)
    verdicts = memory.pop(VERDICTS, None)
    return {
        "kind": kind,
        "from_version": _optional(versions.get("from")),
        "to_version": _optional(versions.get("to")),
        "from_key": _optional(versions.get("from_key")),
        "to_key": _optional(versions.get("to_key")),
        "verdicts": verdicts if isinstance(verdicts, list) else None,
        "plan_stale_at": at,
        "retries": int(memory.pop(RETRIES, None) or 0),
        "leave_maintenance_on": bool(memory.pop(LEAVE, None)),
        "notify_customers": memory.pop(NOTIFY, None) is not False,
        "memory": memory,
    }


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="rollback")
        )
        for name in ("from_version", "to_version", "from_key", "to_key"):
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))
        batch.add_column(sa.Column("verdicts", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("plan_stale_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column(
                "leave_maintenance_on", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(
            sa.Column("notify_customers", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    bind = op.get_bind()
    rows = bind.execute(sa.select(runs.c.id, runs.c.requester, runs.c.memory)).all()
    for run_id, requester, memory in rows:
        raw = _json(memory)
        typed = _typed(dict(raw) if isinstance(raw, dict) else {}, requester)
        bind.execute(runs.update().where(runs.c.id == run_id).values(**typed))
    for table, states in STATES.items():
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(f"ck_{table}_state", _in("state", states))
            if table == "runs":
                batch.create_check_constraint("ck_runs_kind", _in("kind", KINDS))


def _forward_to(plan: object) -> dict[str, Any]:
    """A drill's memory entry, from its marker step (the version it rolls forward to)."""
    steps = _json(plan)
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and step.get("name") == MARKER:
            return {"forward_to": str((step.get("spec") or {}).get("ref", ""))}
    return {}


def _untyped(row: Any) -> dict[str, Any]:
    """The row's memory with its facts put back under their old keys."""
    raw = _json(row.memory)
    memory = dict(raw) if isinstance(raw, dict) else {}
    if row.kind == "drill":
        memory[DRILL] = _forward_to(row.plan)
    if row.from_version is not None or row.to_version is not None:
        versions = {"from": row.from_version or "", "to": row.to_version or ""}
        for name in ("from_key", "to_key"):
            if getattr(row, name) is not None:
                versions[name] = getattr(row, name)
        memory[VERSIONS] = versions
    verdicts = _json(row.verdicts)
    if verdicts is not None:
        memory[VERDICTS] = verdicts
    if row.plan_stale_at is not None:
        memory[STALE] = row.plan_stale_at.replace(tzinfo=UTC).isoformat()
    if row.retries:
        memory[RETRIES] = row.retries
    if row.leave_maintenance_on:
        memory[LEAVE] = True
    if not row.notify_customers:
        memory[NOTIFY] = False
    return memory


def downgrade() -> None:
    for table in STATES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"ck_{table}_state", type_="check")
            if table == "runs":
                batch.drop_constraint("ck_runs_kind", type_="check")
    bind = op.get_bind()
    columns = [c for c in runs.c if c.name not in ("requester",)]
    for row in bind.execute(sa.select(*columns)).all():
        bind.execute(runs.update().where(runs.c.id == row.id).values(memory=_untyped(row)))
    with op.batch_alter_table("runs") as batch:
        for name in (
            "kind",
            "from_version",
            "to_version",
            "from_key",
            "to_key",
            "verdicts",
            "plan_stale_at",
            "retries",
            "leave_maintenance_on",
            "notify_customers",
        ):
            batch.drop_column(name)
