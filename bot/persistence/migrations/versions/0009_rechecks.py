"""rechecks and sync_resumes: the timed re-check after a rollback, and who resumed GitOps sync

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-28 06:15:00

A Kubernetes rollback that succeeded is re-read a while later (`recheck_after`),
in case Argo CD, Flux, a person or a pipeline put another pod template back:
`rechecks` holds each due re-check (the undo step it re-checks, when), claimed
by one bot process with a fencing token so exactly one reports it, and found by
(state, due_at). `sync_resumes` records the press of Resume sync for a run's
suspended GitOps owners: one row per run, inserted before the cluster is
called, so a second press is told who did it and when.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rechecks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("step", sa.String(80), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(80), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(), nullable=True),
        sa.Column("claim_generation", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=True),
        sa.Column("changed", sa.Boolean(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", "position"),
    )
    op.create_index("ix_rechecks_state_due_at", "rechecks", ["state", "due_at"])
    op.create_table(
        "sync_resumes",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("by", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_resumes")
    op.drop_index("ix_rechecks_state_due_at", table_name="rechecks")
    op.drop_table("rechecks")
