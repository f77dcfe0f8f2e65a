"""Fixtures for the bot core: a store on SQLite and on PostgreSQL, a config, a planner."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import RollbackConfig, parse_config
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine, upgrade
from tests.fakes.database import postgres_database
from tests.fakes.targets import ScriptedTarget, write_script

ALICE, BOB, CAROL, MALLORY = "UALICE0001", "UBOB000001", "UCAROL0001", "UMALLORY01"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 3, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def config_dict(**prod: Any) -> dict[str, Any]:
    """A config with prod (app, db, full) and staging, overridable per test."""
    env: dict[str, Any] = {
        "incident_channel": "C0INCIDENT",
        "approvers": {"users": [BOB, CAROL], "groups": ["SDBAS00001"]},
        "approvals_required": 1,
        "approval_ttl_minutes": 30,
        "break_glass": True,
        "targets": {
            "app": {"kind": "kubernetes", "namespace": "voxflow-prod", "deployment": "voxflow-api"},
            "db": {
                "kind": "database",
                "connection": {"dbname": "voxflow_prod"},
                "backups": "/backups",
            },
            "full": {"kind": "full", "targets": ["db", "app"]},
        },
    }
    env.update(prod)
    return {"environments": {"prod": env}}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The bot's database: a SQLite file, then a fresh PostgreSQL database."""
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
    upgrade(engine)
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
