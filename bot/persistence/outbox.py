"""Messages to people waiting to be delivered, and the Slack messages the bot posted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.persistence.database import Repository
from bot.persistence.journal import add_message
from bot.persistence.models import OutboxMessage, SlackMessage


class Outbox(Repository):
    """The outbox (`bot.execution.outbox.Sender` delivers it), in order per thread."""

    def enqueue(self, run_id: str | None, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Queue a message to people about a run, or a notice to one person about no run
        (`run_id` None), delivered by `bot.execution.outbox.Sender`."""
        with self.db.session() as session:
            add_message(session, at=self.db.clock(), run_id=run_id, kind=kind, detail=detail or {})

    def heads(self) -> list[OutboxMessage]:
        """Return the oldest pending message of each run that has one, oldest first.

        Only a thread's head is ever delivered, so messages arrive in order per thread;
        the notices that belong to no run are one such line (GROUP BY puts NULLs together).
        """
        with self.db.reading() as session:
            heads = (
                select(func.min(OutboxMessage.id))
                .where(OutboxMessage.state == "pending")
                .group_by(OutboxMessage.run_id)
            )
            return list(
                session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.id.in_(heads))
                    .order_by(OutboxMessage.id)
                ).all()
            )

    def has_later(self, message: OutboxMessage) -> bool:
        """Return whether a newer pending message waits in the same run's thread."""
        with self.db.reading() as session:
            later = session.scalar(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.run_id == message.run_id,
                    OutboxMessage.state == "pending",
                    OutboxMessage.id > message.id,
                )
                .limit(1)
            )
            return later is not None

    def backlog(self) -> int:
        """Return how many messages wait to be delivered."""
        with self.db.session() as session:
            return int(
                session.scalar(
                    select(func.count(OutboxMessage.id)).where(OutboxMessage.state == "pending")
                )
                or 0
            )

    def messages(self, run_id: str | None, *, kind: str | None = None) -> list[OutboxMessage]:
        """Return a run's messages in order, whatever their state (None: the messages that
        belong to no run), all or of one `kind`."""
        mine = OutboxMessage.run_id.is_(None) if run_id is None else OutboxMessage.run_id == run_id
        query = select(OutboxMessage).where(mine).order_by(OutboxMessage.id)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        with self.db.reading() as session:
            return list(session.scalars(query).all())

    def claim(self, message: OutboxMessage, *, seconds: float) -> bool:
        """Take a due message for delivery by this process; False if another took it first.

        The claim moves `next_attempt_at` forward, so a sender that dies mid-delivery
        leaves the message due again after `seconds`, and senders of several bot
        processes never deliver the same message at once. Due and claimed on the shared
        clock (`clock`): a sender whose own clock runs ahead must not take a message
        another sender's claim still holds.
        """
        now = self.db.clock()
        with self.db.session() as session:
            result = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.state == "pending",
                    (OutboxMessage.next_attempt_at.is_(None))
                    | (OutboxMessage.next_attempt_at <= now),
                )
                .values(next_attempt_at=now + timedelta(seconds=seconds))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def done(self, message_id: int, *, state: str, error: str = "") -> None:
        """Mark a message `sent`, `superseded` or `failed` (never to be tried again)."""
        with self.db.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(
                    state=state,
                    sent_at=self.db.clock(),
                    last_error=error,
                    attempts=OutboxMessage.attempts + 1,
                )
            )

    def retry(self, message_id: int, *, at: datetime, error: str) -> None:
        """Keep a message pending, not to be tried before `at`."""
        with self.db.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(next_attempt_at=at, last_error=error, attempts=OutboxMessage.attempts + 1)
            )


class Posts(Repository):
    """The messages the bot posted in runs' threads, one per slot."""

    def slot(self, run_id: str, slot: str) -> SlackMessage | None:
        """Return the message the bot posted for `slot` in a run's thread, if it did."""
        with self.db.reading() as session:
            return session.get(SlackMessage, (run_id, slot))

    def run_of(self, *, channel: str | None, ts: str) -> str | None:
        """The run whose thread holds the bot's message (channel, ts): one indexed lookup."""
        if channel is None:
            return None
        with self.db.reading() as session:
            return session.scalar(
                select(SlackMessage.run_id)
                .where(SlackMessage.channel == channel, SlackMessage.ts == ts)
                .limit(1)
            )

    def record(self, run_id: str, slot: str, *, channel: str, ts: str) -> None:
        """Record the ts of the message posted for `slot` (first writer wins)."""
        try:
            with self.db.session() as session:
                session.add(
                    SlackMessage(
                        run_id=run_id, slot=slot, channel=channel, ts=ts, at=self.db.clock()
                    )
                )
        except IntegrityError:
            return
