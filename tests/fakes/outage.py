"""A database that went away, or that takes no more writes, for one engine of the bot's."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

WRITES = ("INSERT", "UPDATE", "DELETE")


class Outage:
    """Refuses statements on an engine while `down` is set: all of them, as a database gone
    away, or (`writes_only`) only writes, with SQLite's words for a full disk."""

    def __init__(self, engine: Engine, *, writes_only: bool = False) -> None:
        self.down = threading.Event()
        self.refused = 0
        self.writes_only = writes_only
        event.listen(engine, "before_cursor_execute", self._refuse)

    def _refuse(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.down.is_set():
            return
        if self.writes_only and not statement.lstrip().upper().startswith(WRITES):
            return
        self.refused += 1
        said = "database or disk is full" if self.writes_only else "connection refused (outage)"
        raise OperationalError(statement, None, Exception(said))
