"""Pure builders for the break-glass review: the thread message and the one-line listing.

The thread message mentions every approver at once (a break-glass run had no second
person look at it), names the approver the review is assigned to, and carries a
**Mark reviewed** button until someone did; then it says who and when.
"""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
)

from bot.config import Approvers
from bot.domain.records import ReviewRecord, RunRecord
from handlers import text as t
from handlers.blocks import mention_approvers, versions
from handlers.ids import Action
from handlers.ids import Block as BlockId


def reviewer(review: ReviewRecord) -> str:
    """The assignee as a mention: a user, or a group where only groups approve."""
    who = review.reviewer
    return t.group(who) if who.startswith("S") else t.user(who)


def review_state(review: ReviewRecord) -> str:
    """`review assigned to @bob, not done yet` or `reviewed by @carol <date>`."""
    if review.reviewed_at is not None:
        return f"reviewed by {t.user(review.reviewed_by)} {t.when(review.reviewed_at)}"
    return f"review assigned to {reviewer(review)}, not done yet"


def review_message(run: RunRecord, review: ReviewRecord, *, approvers: Approvers) -> list[Block]:
    """The thread message of a break-glass run's mandatory review."""
    head = (
        f":rotating_light: *Break-glass:* {t.user(run.requester)} rolled back {versions(run)} "
        f"without a second approver. Approvers: "
        f"{mention_approvers(approvers, requester=run.requester) or 'none configured'}"
    )
    if review.reviewed_at is not None:
        return [
            t.section(head),
            t.section(f":white_check_mark: Mandatory review done: {review_state(review)}."),
        ]
    confirm = t.confirm(
        "Mark this review done?",
        t.esc(f"You reviewed the break-glass rollback of {run.target} in {run.environment}."),
        yes="Mark reviewed",
    )
    return [
        t.section(head),
        t.section(
            f"*Mandatory review* assigned to {reviewer(review)} (any approver but "
            f"{t.user(run.requester)} may mark it done). Check the rollback and its outcome, "
            "then mark it reviewed."
        ),
        ActionsBlock(
            block_id=BlockId.REVIEW,
            elements=[
                ButtonElement(
                    text="Mark reviewed",
                    action_id=Action.MARK_REVIEWED,
                    value=run.id,
                    style="primary",
                    confirm=confirm,
                )
            ],
        ),
        t.context(f"Break-glass at {t.when(review.assigned_at)} · {run.incident_id}"),
    ]


def review_text(run: RunRecord) -> str:
    """Notification text of the review message."""
    return t.esc(f"{run.incident_id}: break-glass rollback of {run.target}, review needed")


def review_line(review: ReviewRecord, *, link: str | None) -> str:
    """One unreviewed break-glass run, for /rollback status and the home tab."""
    thread = f" · <{link}|thread>" if link else ""
    return (
        f":rotating_light: *{review.incident_id}* {t.esc(review.environment)} · break-glass by "
        f"{t.user(review.requester)} {t.when(review.assigned_at)} · {review_state(review)}{thread}"
    )
