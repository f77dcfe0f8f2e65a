"""Two replicas on one database, one whose own clock is 40 minutes ahead: one clock decides.

Request expiry, approvals' age and outbox claims are compared on the one clock the
replicas share (`Store.clock`: each process's clock corrected to the database's), so the
skew of one process changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from bot.config import RollbackConfig
from bot.domain.decision import Answers, Severity
from bot.execution.outbox import Sender
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.models import OutboxMessage, Run
from bot.persistence.store import Store, make_engine, upgrade, utcnow
from tests.fakes.config import ALICE, BOB
from tests.fakes.outage import Outage
from tests.fakes.waiting import wait_for

SKEW = timedelta(minutes=40)


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on two engines: one on time, one whose process clock is 40 minutes ahead."""
    on_time, ahead = make_engine(database_url), make_engine(database_url)
    upgrade(on_time)
    yield Store(on_time), Store(ahead, process_clock=lambda: utcnow() + SKEW)
    on_time.dispose()
    ahead.dispose()


def request(workflow: Workflow, planner: Planner, target: str) -> Run:
    env = workflow.config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target=target, point="1")
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    return run


def test_a_request_made_through_one_replica_is_not_expired_by_one_whose_clock_is_ahead(
    replicas: tuple[Store, Store], config: RollbackConfig, planner: Planner
) -> None:
    on_time, ahead = replicas
    here, there = Workflow(store=on_time, config=config), Workflow(store=ahead, config=config)
    run = request(here, planner, "app")
    assert there.expire_due() == []
    assert there.approve(run.id, user=BOB).run.state == "approved"
    # a request made through the replica ahead gets the same time to live, not 40 minutes more
    other = request(there, planner, "db")
    assert other.expires_at is not None and run.expires_at is not None
    assert abs(other.expires_at - run.expires_at) < timedelta(minutes=1)
    assert here.expire_due() == []


def test_a_message_a_sender_holds_is_not_taken_by_a_sender_whose_clock_is_ahead(
    replicas: tuple[Store, Store], config: RollbackConfig, planner: Planner
) -> None:
    on_time, ahead = replicas
    run = request(Workflow(store=on_time, config=config), planner, "app")
    on_time.outbox.enqueue(run.id, "run.note", {"text": "progress"})
    delivered: list[tuple[str, int]] = []
    slack_answers = threading.Event()

    def slow(message: OutboxMessage) -> None:  # a long Slack call: the claim must outlast it
        delivered.append(("on time", message.id))
        slack_answers.wait(30)

    first = Sender(store=on_time, deliver=slow)
    second = Sender(store=ahead, deliver=lambda m: delivered.append(("ahead", m.id)))
    thread = threading.Thread(target=first.deliver_due)
    thread.start()
    wait_for(lambda: delivered, what="the first sender delivering")
    assert second.deliver_due() == 0
    slack_answers.set()
    thread.join(timeout=30)
    assert [who for who, _ in delivered] == ["on time"]
    states = {m.id: m.state for m in on_time.outbox.messages(run.id)}
    assert states[delivered[0][1]] == "sent"


def test_the_shared_clock_keeps_its_last_offset_while_the_database_is_away(
    replicas: tuple[Store, Store],
) -> None:
    _, ahead = replicas
    before = ahead.clock()
    assert abs(before - utcnow()) < timedelta(minutes=1)  # corrected: not 40 minutes ahead
    outage = Outage(ahead.engine)
    outage.down.set()
    ahead.OFFSET_SECONDS = 0.0  # due to be measured again, and the database does not answer
    after = ahead.clock()
    assert outage.refused >= 1 and before <= after < before + timedelta(minutes=1)
