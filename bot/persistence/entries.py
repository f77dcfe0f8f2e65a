"""Entry keys: the Slack requests already acted on (owned by the entry points)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from bot.persistence.database import Repository
from bot.persistence.models import EntryKey


class Entries(Repository):
    """Each Slack request acts once: retries and replays find their key taken."""

    def receive(self, key: str, *, keep: timedelta = timedelta(days=1)) -> bool:
        """Record `key` as received; False if it was already (a retry or a replay).

        The primary key decides between concurrent duplicates. Keys older than
        `keep` (far beyond Slack's retries and its 5-minute replay window) are
        dropped on the way.
        """
        now = self.db.clock()
        with self.db.session() as session:
            session.execute(delete(EntryKey).where(EntryKey.received_at < now - keep))
        try:
            with self.db.session() as session:
                session.add(EntryKey(key=key, received_at=now, outcome=None))
            return True
        except IntegrityError:
            return False

    def has(self, key: str) -> bool:
        """Return whether a request with `key` was received."""
        with self.db.reading() as session:
            return session.get(EntryKey, key) is not None

    def outcome(self, key: str) -> str | None:
        """Return what the first request with `key` did, if it has finished."""
        with self.db.reading() as session:
            row = session.get(EntryKey, key)
            return row.outcome if row else None

    def settle(self, key: str, *, outcome: str) -> None:
        """Record what the request with `key` did."""
        with self.db.session() as session:
            session.execute(update(EntryKey).where(EntryKey.key == key).values(outcome=outcome))

    def release(self, key: str) -> None:
        """Forget `key`, so the same request may act later (it changed nothing)."""
        with self.db.session() as session:
            session.execute(delete(EntryKey).where(EntryKey.key == key))
