"""history indexes: every query the bot makes by state, target, time or message is indexed

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-28 04:00:00

Why each (issue 16, point 4; the queries are in bot/persistence/store.py):
- runs(state, created_at): `/rollback status`, the home tab, the runner's claim
  and expiry sweeps filter by state; the newest first.
- runs(environment, target, created_at): `/rollback history <target> <env>`.
- runs(created_at): the newest runs, unfiltered (the bot's hand-back at stop).
- steps(state, finished_at): the restore-rate estimate reads the newest
  succeeded steps, a bounded backward range scan instead of a sort of all.
- slack_messages(channel, ts): a checklist tick names only its message; the
  run is found by (channel, ts) in one lookup instead of scanning recent runs.
The incident-id allocation no longer uses LIKE (bot/persistence/store.py), so no pattern
index is needed: it looks its candidates up by primary key.
"""

from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_runs_state_created_at", "runs", ["state", "created_at"]),
    ("ix_runs_environment_target_created_at", "runs", ["environment", "target", "created_at"]),
    ("ix_runs_created_at", "runs", ["created_at"]),
    ("ix_steps_state_finished_at", "steps", ["state", "finished_at"]),
    ("ix_slack_messages_channel_ts", "slack_messages", ["channel", "ts"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)
    # runs(state) alone is a prefix of runs(state, created_at): one index less to write,
    # and the planner can no longer pick it and sort all active runs.
    op.drop_index("ix_runs_state", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_state", "runs", ["state"], unique=False)
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
