"""entry keys: Slack requests already acted on, for idempotent commands, submissions, clicks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entry_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("entry_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_entry_keys_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("entry_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_entry_keys_received_at"))
    op.drop_table("entry_keys")
