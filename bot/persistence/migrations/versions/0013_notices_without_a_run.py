"""outbox: a notice to one person need not belong to a run

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 20:00:00

A notice Slack did not take (a refused slash command, a form that failed before any run
existed) goes into the outbox like a run's messages, so it is delivered after a Slack
outage even if this process dies meanwhile (issue 29, point 8); its `run_id` is NULL.
Nothing to carry over: every existing row belongs to a run. The downgrade deletes the
notices that belong to no run (the older schema cannot hold them) and says how many.
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as table:
        table.alter_column("run_id", existing_type=sa.String(40), nullable=True)


def downgrade() -> None:
    dropped = op.get_bind().execute(sa.text("DELETE FROM outbox WHERE run_id IS NULL"))
    if dropped.rowcount:
        log.warning("dropped %d notices that belong to no run", dropped.rowcount)
    with op.batch_alter_table("outbox") as table:
        table.alter_column("run_id", existing_type=sa.String(40), nullable=False)
