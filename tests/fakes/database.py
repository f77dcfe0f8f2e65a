"""The bot's own database for tests: a fresh PostgreSQL database, empty or from a template.

Copies of the migrated template are made ahead by a thread of this process (`Copies`), so a
test's database is usually ready when it starts. Dropping a database waits for the server
to flush (0.2-1 s here), longer than making one from a template, so a test's databases are
dropped by a thread of this process while the next tests run; `drop_pending` waits for every
drop (at the end of a pytest worker, tests/fakes/stores.py), so none is left behind. A
database's name carries the pid of the process that made it, so one left by a killed run
(no teardown runs after SIGKILL) is dropped by the next (`drop_orphans`).
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
    """Create a PostgreSQL database (empty, or a copy of `template`: one copied ahead, see
    `Copies`); yield its SQLAlchemy URL; drop it afterwards (in the background: see
    `drop_pending`)."""
    name = None if template is None else _copies(template).take()
    if name is None:
        name = _create(prefix, template)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_later(name)


def _create(prefix: str, template: str | None) -> str:
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(5)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(create)
    return name


class Copies:
    """Copies of one template made ahead by a thread of this process, `STOCK` at a time, so a
    test takes one made while earlier tests ran instead of waiting for CREATE DATABASE."""

    STOCK = 2

    def __init__(self, template: str) -> None:
        self.template = template
        self.ready: queue.Queue[str] = queue.Queue()
        self.wanted = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._make, name="db-copier", daemon=True)

    def take(self) -> str | None:
        """A copy made ahead, or None (the caller makes one) while there is none yet."""
        if self.thread.ident is None and not self.stopped.is_set():
            self.thread.start()
        self.wanted.set()
        try:
            return self.ready.get_nowait()
        except queue.Empty:
            return None

    def stop(self) -> None:
        """Stop copying (before the template is dropped); hand the unused copies to the dropper."""
        self.stopped.set()
        self.wanted.set()
        if self.thread.is_alive():
            self.thread.join()
        while not self.ready.empty():
            drop_later(self.ready.get_nowait())

    def _make(self) -> None:
        while not self.stopped.is_set():
            self.wanted.wait()
            self.wanted.clear()
            while not self.stopped.is_set() and self.ready.qsize() < self.STOCK:
                try:
                    self.ready.put(_create("rbtest", self.template))
                except psycopg.Error as exc:
                    _failed.append(f"a copy of {self.template}: {exc}")
                    return


_copiers: dict[str, Copies] = {}


def _copies(template: str) -> Copies:
    with _lock:
        return _copiers.setdefault(template, Copies(template))


def stop_copies(template: str) -> None:
    """Stop making copies of `template` ahead (before it is dropped)."""
    with _lock:
        copies = _copiers.pop(template, None)
    if copies is not None:
        copies.stop()


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
