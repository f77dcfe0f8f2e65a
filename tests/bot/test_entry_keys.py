"""Entry keys on SQLite and PostgreSQL: a request is received once; migration 0003 up and down."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bot.persistence.models import Base
from bot.persistence.store import Store, _alembic_config, make_engine
from tests.fakes.config import Clock


def test_a_key_is_received_once_and_says_what_the_first_did(store: Store) -> None:
    assert store.entries.receive("click:1.0:approve_run:U1")
    assert not store.entries.receive("click:1.0:approve_run:U1")
    assert store.entries.has("click:1.0:approve_run:U1")
    assert store.entries.outcome("click:1.0:approve_run:U1") is None
    store.entries.settle("click:1.0:approve_run:U1", outcome="you approved it")
    assert store.entries.outcome("click:1.0:approve_run:U1") == "you approved it"
    assert not store.entries.has("click:1.0:approve_run:U2")


def test_concurrent_duplicates_are_received_once(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        firsts = list(pool.map(lambda _: store.entries.receive("view:V1:h1"), range(12)))
    assert firsts.count(True) == 1


def test_a_released_key_may_act_again(store: Store) -> None:
    store.entries.receive("click:2.0:approve_run:U1")
    store.entries.release("click:2.0:approve_run:U1")
    assert store.entries.receive("click:2.0:approve_run:U1")


def test_keys_older_than_a_day_are_dropped(store: Store, clock: Clock) -> None:
    store.entries.receive("command:old-trigger")
    clock.advance(hours=25)
    store.entries.receive("command:new-trigger")
    assert not store.entries.has("command:old-trigger")
    assert store.entries.receive("command:old-trigger")


def test_migration_matches_the_model_and_downgrades(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "entry_keys" in str(d)] == []
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0001")
    assert "entry_keys" not in inspect(engine).get_table_names()
    engine.dispose()
