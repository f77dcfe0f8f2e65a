"""auto_approve_at: monitoring's veto deadline is a column of its own, not step memory

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 04:35:00

A run's memory is what its steps keep for later steps and for a resume; the
time monitoring approves a run itself is a fact about the request, read by the
runner loop on every pass. As a column it is typed and queried directly (the
requested runs are found by runs(state, created_at), migration 0005; a second
index led with state made the planners pick it for every state query and sort),
instead of reading every requested run's memory. Existing deadlines move out.
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY = "auto_approve_at"
runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("memory", sa.JSON),
    sa.column("auto_approve_at", sa.DateTime),
)


def _memory(value: object) -> dict[str, object]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {}


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("auto_approve_at", sa.DateTime(), nullable=True))
    bind = op.get_bind()
    for run_id, memory in bind.execute(sa.select(runs.c.id, runs.c.memory)).all():
        kept = _memory(memory)
        due = kept.pop(KEY, None)
        if not isinstance(due, str):
            continue
        at = datetime.fromisoformat(due)
        if at.tzinfo is not None:  # stored naive UTC, as bot.persistence.models.UTCDateTime does
            at = at.astimezone(UTC).replace(tzinfo=None)
        bind.execute(
            runs.update().where(runs.c.id == run_id).values(memory=kept, auto_approve_at=at)
        )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(runs.c.id, runs.c.memory, runs.c.auto_approve_at).where(
            runs.c.auto_approve_at.is_not(None)
        )
    ).all()
    for run_id, memory, due in rows:
        kept = _memory(memory)
        kept[KEY] = due.isoformat() + "+00:00"
        bind.execute(runs.update().where(runs.c.id == run_id).values(memory=kept))
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("auto_approve_at")
