"""The bot while its database is away or takes no writes: commands answer, readiness says so."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from bot.persistence.store import Store, make_engine, upgrade
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE
from tests.fakes.database import postgres_database
from tests.fakes.outage import Outage
from tests.fakes.waiting import wait_for


def readyz(sandbox: Sandbox) -> httpx.Response:
    return httpx.get(sandbox.platform.bot_url.replace("/slack/events", "/readyz"), timeout=30)


def test_rollback_status_answers_with_a_message_while_the_database_is_away(
    sandbox: Sandbox,
) -> None:
    outage = Outage(sandbox.process.engine)
    wait_for(lambda: readyz(sandbox).status_code == 200, what="ready")
    outage.down.set()
    answer = sandbox.person(ALICE).slash("status")
    assert answer.status_code == 200
    said = answer.json()
    assert said["response_type"] == "ephemeral"
    assert "cannot read its database" in said["text"] and "Reference" in said["text"]
    not_ready = readyz(sandbox)
    assert not_ready.status_code == 503
    assert any("does not answer" in p for p in not_ready.json()["problems"])
    outage.down.clear()
    wait_for(lambda: readyz(sandbox).status_code == 200, what="ready again")
    assert "Active rollbacks" in str(sandbox.person(ALICE).slash("status").json())


def test_readiness_fails_while_the_database_takes_no_writes(sandbox: Sandbox) -> None:
    outage = Outage(sandbox.process.engine, writes_only=True)
    wait_for(lambda: readyz(sandbox).status_code == 200, what="ready")
    outage.down.set()
    not_ready = readyz(sandbox)
    assert not_ready.status_code == 503
    assert any("cannot be written" in p for p in not_ready.json()["problems"])
    outage.down.clear()
    wait_for(lambda: readyz(sandbox).status_code == 200, what="ready again")


@pytest.mark.postgres
def test_a_read_only_postgresql_is_found_unwritable_by_the_write_probe() -> None:
    with postgres_database() as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            store = Store(engine)
            assert store.unwritable() is None
            name = engine.url.database
            with engine.connect() as connection:
                connection.execute(
                    text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                )
                connection.commit()
            engine.dispose()  # new sessions take the database's new default
            said = store.unwritable()
            assert said is not None and "read-only transaction" in said
            assert store.runs.find(limit=1) == []  # reads still work: only writes are refused
        finally:
            engine.dispose()
