"""The **Mark reviewed** button of a break-glass run's mandatory review.

Acks at once, then (on the bot's own pool) records the review through
`bot.reviews.Reviews`, which decides who may (any approver of the environment
but the person who broke the glass) and re-renders the thread's review
message. A click acts once per person and message; a refusal is said only to
the person who clicked, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.config import UnknownTarget
from bot.reviews import Reviews
from bot.workflow import Refused
from handlers import payloads
from handlers import text as t
from handlers.approvals import click_key
from handlers.deps import Deps
from handlers.errors import tell
from handlers.flows import Groups, flows_for
from handlers.ids import Action
from handlers.lazy import after_ack
from handlers.payloads import BadPayload
from handlers.thread import IncidentThread


def register(app: App, deps: Deps) -> None:
    """Listen for Mark reviewed."""
    flows = flows_for(deps)
    groups = Groups(deps)
    reviews = Reviews(deps.store, deps.config, thread=IncidentThread(deps))

    @app.action(Action.MARK_REVIEWED)
    @after_ack(deps.later)
    def reviewed(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            click = payloads.click(body)
        except BadPayload as exc:
            tell(client, payloads.where_of(body), f":warning: {t.esc(exc)}")
            return
        key = click_key(click)
        received = flows.receive(key)
        if not received.first:
            tell(client, click.where, f":information_source: {received.repeated('click')}")
            return
        review = deps.store.review(click.run_id)
        try:
            user_groups = groups.of(review.environment, click.where.user) if review else frozenset()
            reviews.mark_reviewed(click.run_id, user=click.where.user, user_groups=user_groups)
        except (Refused, UnknownTarget) as exc:
            flows.release(key)
            said = str(exc)
            tell(client, click.where, f":warning: {said[0].upper()}{said[1:]}.")
            return
        flows.settle(key, "you marked the break-glass review done")
