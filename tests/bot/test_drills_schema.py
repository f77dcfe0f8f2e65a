"""Migration 0010 creates the drills table exactly as bot.persistence.models describes it, and drops
it."""

from __future__ import annotations

import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bot.persistence.models import Base
from bot.persistence.store import _alembic_config, make_engine, upgrade


def test_migration_0010_matches_the_drill_model_and_downgrades(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    upgrade(engine)
    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    drill_diffs = [d for d in diffs if "drills" in repr(d)]
    assert drill_diffs == []
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0006")
    assert "drills" not in sqlalchemy.inspect(engine).get_table_names()
    upgrade(engine)
    assert "drills" in sqlalchemy.inspect(engine).get_table_names()
    engine.dispose()
