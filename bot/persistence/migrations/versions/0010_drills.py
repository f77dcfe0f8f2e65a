"""drills: one row per rollback drill, its measured time to recover and the verdict it tested

Revision ID: 0010
Revises: 0006
Create Date: 2026-11-28 06:00:00

A drill is a rollback run (incident source `drill`) whose plan rolls the target
back and forward again (bot/application/drills.py). The run and its steps already hold what
happened; this row keeps what the drill measured, so `/rollback drills`, the
App Home tab and the modal read one indexed row per target instead of walking
every run's steps: the time to recover per step and per target, the time to roll
forward, and the reversibility verdict the plan carried (null when it carried
none) with whether it held.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("target", sa.String(40), nullable=False),
        sa.Column("requester", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Text(), nullable=False, server_default=""),
        sa.Column("to_version", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("recover_seconds", sa.Float(), nullable=True),
        sa.Column("forward_seconds", sa.Float(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(40), nullable=True),
        sa.Column("verdict_held", sa.Boolean(), nullable=True),
    )
    op.create_index(
        "ix_drills_environment_target_created_at",
        "drills",
        ["environment", "target", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_drills_environment_target_created_at", table_name="drills")
    op.drop_table("drills")
