"""target_versions: each target's last known healthy version and the versions rolled away from

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 06:00:00

After a rollback the previous revision is the version just rolled away from;
offering it as the default would let a second responder redeploy the broken
build with two clicks (issue 15, point 6). One row per (environment, target,
version) keeps the last thing the bot learnt about that version: healthy (a
verified rollback to it) or rolled away (a rollback moved away from it), when,
and in which incident. Rows are written in the same transaction as the run's
end. Nothing to carry over from older data: runs before this kept no version key.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "target_versions",
        sa.Column("environment", sa.String(40), primary_key=True),
        sa.Column("target", sa.String(40), primary_key=True),
        sa.Column("version", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("target_versions")
