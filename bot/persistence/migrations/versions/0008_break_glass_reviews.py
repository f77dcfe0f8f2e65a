"""break_glass_reviews: the mandatory review of a break-glass run has an owner and an end

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-28 06:00:00

A break-glass run skips the second approver; the procedures make up for it with a
review afterwards. Until now that was a flag on the run (`review_required`) nobody
owned or closed. Each break-glass run now gets a row naming the approver it is
assigned to, and who reviewed it when. `/rollback status` and the home tab list the
rows whose `reviewed_at` is empty, found by the (reviewed_at, assigned_at) index.
Break-glass runs from before this migration get a row assigned to nobody in
particular (their requester's environment's approvers see them as unassigned).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

UNASSIGNED = "approvers"


def upgrade() -> None:
    op.create_table(
        "break_glass_reviews",
        sa.Column("run_id", sa.String(length=40), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("incident_id", sa.String(length=40), nullable=False),
        sa.Column("environment", sa.String(length=40), nullable=False),
        sa.Column("requester", sa.String(length=40), nullable=False),
        sa.Column("reviewer", sa.String(length=40), nullable=False),
        sa.Column("assigned_at", sa.DateTime(), nullable=False),
        sa.Column("reviewed_by", sa.String(length=40), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "ix_break_glass_reviews_reviewed_at",
        "break_glass_reviews",
        ["reviewed_at", "assigned_at"],
        unique=False,
    )
    runs = sa.table(
        "runs",
        sa.column("id", sa.String),
        sa.column("incident_id", sa.String),
        sa.column("environment", sa.String),
        sa.column("requester", sa.String),
        sa.column("review_required", sa.Boolean),
        sa.column("created_at", sa.DateTime),
    )
    reviews = sa.table(
        "break_glass_reviews",
        sa.column("run_id", sa.String),
        sa.column("incident_id", sa.String),
        sa.column("environment", sa.String),
        sa.column("requester", sa.String),
        sa.column("reviewer", sa.String),
        sa.column("assigned_at", sa.DateTime),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(
            runs.c.id, runs.c.incident_id, runs.c.environment, runs.c.requester, runs.c.created_at
        ).where(runs.c.review_required.is_(True))
    ).all()
    for run_id, incident_id, environment, requester, created_at in rows:
        bind.execute(
            reviews.insert().values(
                run_id=run_id,
                incident_id=incident_id,
                environment=environment,
                requester=requester,
                reviewer=UNASSIGNED,
                assigned_at=created_at,
            )
        )


def downgrade() -> None:
    op.drop_index("ix_break_glass_reviews_reviewed_at", table_name="break_glass_reviews")
    op.drop_table("break_glass_reviews")
