"""target_versions: who cleared a version rolled away from, when and why

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:00:00

A version rolled away from stays marked bad for its target until an approver clears
it in Slack with a reason (issue 31, point 2): the regression guard answers CI/CD
and Argo CD hooks with that mark. Clearing keeps the row's state and incident (the
record of why it was bad) and adds who cleared it, when and why; a later rollback
away from the same version marks it bad again and forgets the old clearing. Nothing
to carry over: no version was cleared before this revision, and the downgrade drops
the clearings with the columns (the versions then count as bad again, as they did).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("target_versions") as table:
        table.add_column(sa.Column("cleared_by", sa.String(40), nullable=True))
        table.add_column(sa.Column("cleared_at", sa.DateTime(), nullable=True))
        table.add_column(sa.Column("cleared_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("target_versions") as table:
        table.drop_column("cleared_reason")
        table.drop_column("cleared_at")
        table.drop_column("cleared_by")
