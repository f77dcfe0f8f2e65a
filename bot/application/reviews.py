"""The mandatory review of a break-glass rollback: assigned, visible, closed by a person.

Break-glass lets one person roll back without a second approver; the procedures
make up for it afterwards with a review. A review nobody owns is a review nobody
does, so:

- **Assigned at once, round-robin.** When a break-glass run is requested its
  review goes to one approver of the environment: the configured approver users
  in config order, skipping the person who broke the glass, taking turns by how
  many reviews the environment has had (the n-th review goes to candidate
  n mod k). Where only user groups approve, it is assigned to the first group.
  The row is written right after the request, before the thread is opened, so a
  break-glass run whose thread Slack refused is still listed.
- **Closed by any approver except the one who broke the glass.** The assignee is
  who is asked (mentioned, shown on the home tab as theirs); at 3 a.m. they may
  be asleep, so any other approver of the environment (directly or through a
  group) may mark it reviewed instead. The requester never reviews their own
  break-glass. Marking is once: a second click is told who did it.
- **Listed until done:** `/rollback status` and the home tab list the reviews not
  yet done (`Reviews.pending`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.config import Environment, RollbackConfig
from bot.execution.workflow import Refused
from bot.persistence.models import BreakGlassReview, Run
from bot.persistence.store import Store


class ReviewThread(Protocol):
    """What the reviews need from the Slack side."""

    def review(self, run_id: str) -> None:
        """Post, or re-render, the run's break-glass review message."""


def candidates(env: Environment, requester: str) -> list[str]:
    """Who a review may be assigned to: approver users except the requester, else groups."""
    users = [u for u in env.approvers.users if u != requester]
    return users or list(env.approvers.groups)


@dataclass
class Reviews:
    """Assign, close and list the reviews of break-glass runs."""

    store: Store
    config: RollbackConfig
    thread: ReviewThread | None = None

    def assign(self, run: Run) -> BreakGlassReview | None:
        """Assign the review of a break-glass run (round-robin); None for any other run."""
        if not run.break_glass:
            return None
        pool = candidates(self.config.environment(run.environment), run.requester)
        return self.store.reviews.assign(run=run, reviewer="", pick=lambda n: pool[n % len(pool)])

    def mark_reviewed(
        self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()
    ) -> BreakGlassReview:
        """Record `user`'s review, or raise Refused saying why nothing changed."""
        review = self.store.reviews.get(run_id)
        if review is None:
            raise Refused("this rollback has no break-glass review")
        if review.reviewed_at is not None:
            raise Refused(
                f"this break-glass rollback was already reviewed by <@{review.reviewed_by}>"
            )
        if user == review.requester:
            raise Refused("you ran this break-glass rollback; another approver must review it")
        env = self.config.environment(review.environment)
        if user not in env.approvers.users and not user_groups & set(env.approvers.groups):
            raise Refused(
                f"only an approver of {review.environment} can review a break-glass rollback"
            )
        if not self.store.reviews.mark(run_id, user=user):
            done = self.store.reviews.get(run_id)
            raise Refused(_already(done.reviewed_by if done else None))
        if self.thread is not None:
            self.thread.review(run_id)
        done = self.store.reviews.get(run_id)
        assert done is not None
        return done

    def unreviewed(self, *, limit: int = 50) -> list[BreakGlassReview]:
        """The reviews not yet done, oldest first."""
        return self.store.reviews.pending(limit=limit)


def _already(by: str | None) -> str:
    who = f"<@{by}>" if by else "another approver"
    return f"this break-glass rollback was already reviewed by {who}"
