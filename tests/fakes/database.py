"""The bot's own database for tests: a fresh PostgreSQL database, empty or from a template.

Dropping a database waits for the server to flush (0.2-1 s here), longer than making one
from a template, so a test's databases are dropped by a thread of this process while the
next tests run; `drop_pending` waits for every drop (at the end of a pytest worker,
tests/fakes/stores.py), so none is left behind. A database's name carries the pid of the
process that made it, so one left by a killed run (no teardown runs after SIGKILL) is dropped
by the next (`drop_orphans`).
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

_doomed: queue.Queue[str] = queue.Queue()
_dropper: list[threading.Thread] = []
_lock = threading.Lock()
_failed: list[str] = []


@contextmanager
def postgres_database(prefix: str = "rbtest", *, template: str | None = None) -> Iterator[str]:
    """Create a PostgreSQL database (empty, or a copy of `template`); yield its SQLAlchemy URL;
    drop it afterwards (in the background: see `drop_pending`)."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(5)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_later(name)


def drop_now(name: str) -> None:
    """Drop a database, ending its sessions (WITH (FORCE))."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_later(name: str) -> None:
    """Drop a database in the background (see `drop_pending`)."""
    with _lock:
        if not _dropper:
            _dropper.append(threading.Thread(target=_drop_all, name="db-dropper", daemon=True))
            _dropper[0].start()
    _doomed.put(name)


def _drop_all() -> None:
    while True:
        name = _doomed.get()
        try:
            drop_now(name)
        except psycopg.Error as exc:
            _failed.append(f"{name}: {exc}")
        finally:
            _doomed.task_done()


def drop_pending() -> None:
    """Wait until every database handed to the background dropper is dropped; fail naming
    any that could not be."""
    _doomed.join()
    assert not _failed, f"test databases left behind: {_failed}"


def drop_orphans() -> None:
    """Drop the test databases whose maker (the pid in their name) no longer runs."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()]
    for name in names:
        made = re.fullmatch(r"rbtest(?:_[a-z]+)*_(\d+)_[0-9a-f]{10}", name)
        if made and not os.path.exists(f"/proc/{made.group(1)}"):
            drop_later(name)
