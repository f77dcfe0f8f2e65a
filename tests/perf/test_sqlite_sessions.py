"""SQLite as an embedded default that holds: reads never wait, writers never wait on reads.

Two (or three) engines on one SQLite file stand for two bot processes, or
for a listener and the runner. A read session is held open, mid-transaction,
on a thread of its own while the others read and write (issue 16, point 5).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bot.persistence.store import Store, make_engine, upgrade
from tests.fakes.config import ALICE

DONE_WITHIN = 15.0  # a bound for a hang, far below the 30 s busy timeout; not a timing claim


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(make_engine(url))
    return url


@pytest.fixture
def engines(url: str) -> Iterator[Callable[[], Engine]]:
    made: list[Engine] = []

    def make() -> Engine:
        made.append(make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


@contextmanager
def held(session_of: Callable[[], Any], first: Callable[[Any], Any]) -> Iterator[list[Any]]:
    """Open a session on a thread, run `first` in it, and keep it open until the block ends."""
    opened, release, seen = threading.Event(), threading.Event(), []

    def hold() -> None:
        with session_of() as session:
            seen.append(first(session))
            opened.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert opened.wait(DONE_WITHIN), "the held session could not even start"
    try:
        yield seen
    finally:
        release.set()
        thread.join(DONE_WITHIN)


def finishes(call: Callable[[], Any]) -> Any:
    """Run `call` on a thread; fail if it is still waiting (on a lock) after DONE_WITHIN."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DONE_WITHIN)
    assert not thread.is_alive(), "it waited on another session's lock"
    if errors:
        raise errors[0]
    return result[0]


def count(session: Any) -> int:
    return int(session.execute(text("SELECT count(*) FROM incidents")).scalar_one())


def test_the_file_is_in_wal_mode(engines: Callable[[], Engine]) -> None:
    with engines().connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_long_read_does_not_block_a_writer(engines: Callable[[], Engine]) -> None:
    reader, writer = Store(engines()), Store(engines())
    with held(reader.reading, count) as seen:
        incident = finishes(
            lambda: writer.incidents.create(
                environment="prod", target="app", severity="high", opened_by=ALICE
            )
        )
        # The held read is a real transaction: it still sees its snapshot.
        assert seen == [0]
    assert reader.incidents.get(incident.id) is not None


def test_reads_do_not_wait_on_each_other_or_on_an_open_write(
    engines: Callable[[], Engine],
) -> None:
    first, second, writer = Store(engines()), Store(engines()), Store(engines())
    writer.incidents.create(environment="prod", target="app", severity="high", opened_by=ALICE)

    def write_and_hold(session: Any) -> int:
        session.execute(text("UPDATE incidents SET summary = 'being written'"))
        return 1

    with held(first.reading, count), held(writer.session, write_and_hold):
        runs = finishes(lambda: second.runs.find(limit=10))
        ids = finishes(lambda: _ids(second))
    assert runs == []
    assert len(ids) == 1


def test_a_second_writer_waits_for_the_first_instead_of_failing(
    engines: Callable[[], Engine],
) -> None:
    one, two = Store(engines()), Store(engines())
    with held(one.session, lambda s: s.execute(text("UPDATE incidents SET summary = ''"))):
        waiting = threading.Thread(
            target=lambda: two.incidents.create(
                environment="prod", target="db", severity="high", opened_by=ALICE
            ),
            daemon=True,
        )
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "the second writer did not wait for the first's lock"
    waiting.join(DONE_WITHIN)
    assert not waiting.is_alive()
    assert [r.target for r in [two.incidents.get(i) for i in _ids(two)] if r] == ["db"]


def _ids(store: Store) -> list[str]:
    with store.reading() as session:
        return list(session.execute(text("SELECT id FROM incidents")).scalars())
