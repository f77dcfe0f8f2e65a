"""The bot's store as fixtures, on a SQLite file and on PostgreSQL, with a config and a planner.

Loaded for every folder by tests/conftest.py. Migrations run once per pytest worker (a
session under xdist): `database_url` is a copy of a migrated SQLite file, or a PostgreSQL
database made with `CREATE DATABASE ... TEMPLATE` from a migrated template, which is dropped
when the worker ends. `empty_database_url` is for the tests of the migrations themselves.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import RollbackConfig, parse_config
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine, upgrade
from tests.fakes.config import Clock, config_dict
from tests.fakes.database import drop_orphans, drop_pending, postgres_database, stop_copies
from tests.fakes.targets import ScriptedTarget, write_script

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", autouse=True)
def _drop_databases_at_the_end() -> Iterator[None]:
    """Every test database dropped in the background is gone before the worker ends; those
    a killed run left are dropped first."""
    drop_orphans()
    yield
    drop_pending()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest revision, once per worker."""
    path = tmp_path_factory.mktemp("migrated") / "bot.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection's close checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """A PostgreSQL database migrated to the newest revision: the template of the others."""
    with postgres_database(prefix="rbtest_template") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without sessions
        template = url.rsplit("/", 1)[1]
        yield template
        stop_copies(template)


@pytest.fixture(params=KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The bot's database, migrated: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "bot.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    with postgres_database(template=request.getfixturevalue("migrated_postgres")) as url:
        yield url


@pytest.fixture(params=KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database_url: str, clock: Clock) -> Iterator[Store]:
    engine = make_engine(database_url)
    yield Store(engine, clock=clock)
    engine.dispose()


@pytest.fixture
def config() -> RollbackConfig:
    return parse_config(config_dict(), path=Path("test.yml"))


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "script.json")


@pytest.fixture
def planner(script: Path) -> Any:
    from bot.execution.planner import Planner

    return Planner(factory=lambda params: ScriptedTarget(script))


@pytest.fixture
def workflow(store: Store, config: RollbackConfig) -> Workflow:
    return Workflow(store=store, config=config)
