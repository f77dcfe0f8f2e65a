"""outbox, Slack message slots, fenced leases, plan notes out of step memory

The outbox holds every message to people until the sender has delivered it;
slack_messages records the ts of each message the bot posted (by slot), so a
retried delivery edits instead of posting twice; lease_generation is the
fencing token every write of a runner about a run is conditional on; a run's
plan notes move from `memory` (which now holds only what steps write) to `notes`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_state_run_id", ["state", "run_id"], unique=False)
    op.create_table(
        "slack_messages",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("slot", sa.String(length=80), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id", "slot"),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("notes", sa.JSON(), nullable=True))
    runs = sa.table(
        "runs",
        sa.column("id", sa.String()),
        sa.column("memory", sa.JSON()),
        sa.column("notes", sa.JSON()),
    )
    connection = op.get_bind()
    for run_id, memory in connection.execute(sa.select(runs.c.id, runs.c.memory)).all():
        memory = dict(memory or {})
        notes = memory.pop("notes", [])
        connection.execute(
            sa.update(runs).where(runs.c.id == run_id).values(notes=notes, memory=memory)
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("notes")
        batch_op.drop_column("lease_generation")
    op.drop_table("slack_messages")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state_run_id")
    op.drop_table("outbox")
