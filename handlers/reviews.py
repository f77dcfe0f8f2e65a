"""The **Mark reviewed** button of a break-glass run's mandatory review.

Acks at once, then (on the bot's own pool) records the review through
`bot.application.reviews.Reviews`, which decides who may (any approver of the environment
but the person who broke the glass) and re-renders the thread's review
message. A click acts once per person and message; a refusal is said only to
the person who clicked, and changes nothing.
"""

from __future__ import annotations

from slack_bolt import App

from bot.domain.records import RunRecord
from handlers.approvals import button
from handlers.deps import Deps
from handlers.flows import Groups, flows_for
from handlers.ids import Action
from handlers.lazy import after_ack
from handlers.payloads import Click


def register(app: App, deps: Deps) -> None:
    """Listen for Mark reviewed."""
    flows = flows_for(deps)
    groups = Groups(deps)
    reviews = flows.reviews

    def mark(click: Click, run: RunRecord) -> str:
        user_groups = groups.of(run.environment, click.where.user)
        reviews.mark_reviewed(run.id, user=click.where.user, user_groups=user_groups)
        return "you marked the break-glass review done"

    app.action(Action.MARK_REVIEWED)(after_ack(deps.later)(button(deps, flows, mark)))
