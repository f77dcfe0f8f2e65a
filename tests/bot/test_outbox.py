"""The outbox: a rollback never waits on Slack, and every message arrives afterwards, in order.

Real parts: the bot's database (SQLite and PostgreSQL), the runner, the Slack
renderer, and the sandbox's fake Slack Web API over HTTP, made to answer 429,
500, drop the connection or stall. The runner runs while nothing delivers, so
"the rollback does not wait on Slack" is asserted as "Slack got no call during
the run", not timed.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bot.config import parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.outbox import RetryLater, Sender, Undeliverable
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.models import Base, OutboxMessage, Run
from bot.persistence.store import Store, downgrade, make_engine, upgrade
from handlers.deps import Deps
from handlers.flows import flows_for
from handlers.outbox import SlackOutbox
from handlers.thread import IncidentThread
from sandbox.slack import FakeSlack
from tests.fakes.config import ALICE, Clock, config_dict
from tests.fakes.outbox import EXPECTED, deliver_all, opened_run, runner_for, thread_texts
from tests.fakes.rows import set_run_fields
from tests.fakes.targets import ScriptedTarget, write_script

pytest_plugins = ["tests.fakes.outbox"]  # the `slack` and `deps` fixtures

CHANNEL = "C0INCIDENT"


def disrupt(slack: FakeSlack, fault: str, *, times: int) -> None:
    for method in ("chat.postMessage", "chat.update", "files.getUploadURLExternal"):
        if fault == "429":
            slack.fail_next(method, status=429, retry_after=0, times=times)
        elif fault == "500":
            slack.fail_next(method, error="internal_error", status=500, times=times)
        elif fault == "drop":
            slack.drop_next(method, times=times)
        else:
            slack.stall_next(method, seconds=0.3, times=times)


@pytest.mark.parametrize("fault", ["429", "500", "drop", "stall"])
def test_the_rollback_finishes_without_slack_and_every_message_arrives_later_in_order(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock, fault: str
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    disrupt(slack, fault, times=3)
    calls_before = len(slack.calls)
    assert runner_for(deps, sender).run_pending() == [run.id]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded"
    assert len(slack.calls) == calls_before  # the run made no Slack call at all
    deliver_all(sender, clock)
    assert thread_texts(slack, run, store) == EXPECTED
    assert {m.state for m in store.outbox.messages(run.id)} == {"sent"}
    assert [f.name for f in slack.files()] == [
        f"{run.incident_id}-rca.md",
        f"{run.incident_id}-timeline.png",
    ]
    if fault in ("429", "500"):
        assert any(c.status == int(fault) for c in slack.calls)


def test_a_fault_at_every_call_of_the_run_still_delivers_everything_once(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    runner_for(deps, sender).run_pending()
    faults = ["429", "500", "drop", "stall"]
    methods = ["chat.update", "chat.postMessage"]
    for round_ in range(24):  # each delivery attempt meets one more fault, of every kind
        method = methods[round_ % 2]
        fault = faults[(round_ // 2) % 4]
        if fault == "429":
            slack.fail_next(method, status=429, retry_after=0)
        elif fault == "500":
            slack.fail_next(method, error="internal_error", status=500)
        elif fault == "drop":
            slack.drop_next(method)
        else:
            slack.stall_next(method, seconds=0.3)
        sender.deliver_due()
        clock.advance(seconds=600)
    deliver_all(sender, clock)
    assert thread_texts(slack, run, store) == EXPECTED
    assert [f.name for f in slack.files()] == [
        f"{run.incident_id}-rca.md",
        f"{run.incident_id}-timeline.png",
    ]
    assert {m.state for m in store.outbox.messages(run.id)} <= {"sent", "superseded"}


def test_the_sender_runs_beside_the_runner_while_slack_stalls(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    slack.stall_next("chat.update", seconds=0.2, times=20)
    slack.stall_next("chat.postMessage", seconds=0.2, times=20)
    stop = threading.Event()
    thread = threading.Thread(target=sender.serve, args=(stop,), kwargs={"poll_seconds": 0.05})
    thread.start()
    try:
        assert runner_for(deps, sender).run_pending() == [run.id]
        final = store.runs.get(run.id)
        assert final is not None and final.state == "succeeded"
    finally:
        stop.set()
        sender.wake.set()
        thread.join(timeout=60)
    deliver_all(sender, clock)
    assert thread_texts(slack, run, store) == EXPECTED


def test_a_delivery_repeated_after_a_crash_edits_instead_of_posting_again(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    runner_for(deps, sender).run_pending()
    deliver_all(sender, clock)
    posts = len(slack.calls_to("chat.postMessage"))
    # a crash between Slack's answer and marking the messages sent: deliver them all again
    renderer = SlackOutbox(deps)
    for message in store.outbox.messages(run.id):
        renderer.deliver(message)
    assert len(slack.calls_to("chat.postMessage")) == posts
    assert thread_texts(slack, run, store) == EXPECTED
    assert len(slack.files()) == 2  # the template and its chart, once


def test_a_thread_slack_refuses_for_good_is_marked_failed_and_the_rest_goes_on(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    run = opened_run(deps)
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    runner_for(deps, sender).run_pending()
    slack.fail_next("chat.update", error="channel_not_found", status=200, times=1)
    deliver_all(sender, clock)
    messages = store.outbox.messages(run.id)
    failed = [m for m in messages if m.state == "failed"]
    assert len(failed) == 1 and "channel_not_found" in failed[0].last_error
    assert thread_texts(slack, run, store)[-2] == "Post-rollback verification checklist"


def test_the_thread_says_when_another_process_resumed_the_run(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock, script: Path
) -> None:
    run = opened_run(deps)
    assert store.leases.claim(run.id, owner="host-a:41", seconds=1)
    flows_for(deps).workflow.start(run)
    set_run_fields(store, run.id, lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    sender = Sender(store=store, deliver=SlackOutbox(deps).deliver)
    runner = runner_for(deps, sender)
    runner.owner = "host-b:7"
    runner.run_pending()
    deliver_all(sender, clock)
    texts = thread_texts(slack, run, store)
    resumed = [t for t in texts if "resumed the rollback" in t]
    assert resumed == [
        ":arrows_counterclockwise: `host-a:41` stopped (crash, restart or lost lease); "
        "`host-b:7` resumed the rollback from the approved plan, without planning again."
    ]


# the sender on its own ------------------------------------------------------------


class Script:
    """A deliver function that fails as told, per run, and records what it delivered."""

    def __init__(self) -> None:
        self.failures: dict[str, list[Exception]] = {}
        self.delivered: list[tuple[str, str]] = []

    def __call__(self, message: OutboxMessage) -> None:
        queued = self.failures.get(message.run_id) or []
        if queued:
            raise queued.pop(0)
        self.delivered.append((message.run_id, message.kind))


def two_runs(workflow: Workflow, planner: Planner, config: Any, script: Path) -> list[Run]:
    runs = []
    for target in ("app", "db"):
        env = config.environment("prod")
        plan = planner.build(env_name="prod", env=env, target=target, point=None)
        _, run = workflow.request(
            plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
        )
        runs.append(run)
    return runs


def test_a_failing_thread_waits_in_order_without_holding_the_others(
    store: Store, workflow: Workflow, planner: Planner, config: Any, script: Path, clock: Clock
) -> None:
    write_script(script)
    first, second = two_runs(workflow, planner, config, script)
    for run in (first, second):
        store.outbox.enqueue(run.id, "one")
        store.outbox.enqueue(run.id, "two")
    deliver = Script()
    deliver.failures[first.id] = [RetryLater("Slack 500"), RetryLater("429", delay=30)]
    sender = Sender(store=store, deliver=deliver, base_delay=10)
    sender.drain()
    assert deliver.delivered == [(second.id, "one"), (second.id, "two")]
    head = store.outbox.heads()[0]
    assert head.kind == "one" and head.attempts == 1 and head.last_error == "Slack 500"
    assert head.next_attempt_at == clock.now + timedelta(seconds=10)
    clock.advance(seconds=9)
    sender.drain()
    assert len(deliver.delivered) == 2  # backoff of 10 s not over yet
    clock.advance(seconds=2)
    sender.drain()  # second failure: Retry-After 30 s
    assert len(deliver.delivered) == 2
    clock.advance(seconds=29)
    sender.drain()
    assert len(deliver.delivered) == 2
    clock.advance(seconds=2)
    sender.drain()
    assert deliver.delivered[2:] == [(first.id, "one"), (first.id, "two")]


def test_an_undeliverable_message_is_kept_as_failed_and_the_next_one_goes(
    store: Store, workflow: Workflow, planner: Planner, config: Any, script: Path
) -> None:
    first, _ = two_runs(workflow, planner, config, script)
    store.outbox.enqueue(first.id, "one")
    store.outbox.enqueue(first.id, "two")
    deliver = Script()
    deliver.failures[first.id] = [Undeliverable("not_in_channel")]
    Sender(store=store, deliver=deliver).drain()
    assert deliver.delivered == [(first.id, "two")]
    assert [(m.kind, m.state) for m in store.outbox.messages(first.id)] == [
        ("one", "failed"),
        ("two", "sent"),
    ]


def test_an_unexpected_error_is_retried_not_dropped(
    store: Store, workflow: Workflow, planner: Planner, config: Any, script: Path, clock: Clock
) -> None:
    first, _ = two_runs(workflow, planner, config, script)
    store.outbox.enqueue(first.id, "one")
    deliver = Script()
    deliver.failures[first.id] = [KeyError("bug"), KeyError("bug")]
    sender = Sender(store=store, deliver=deliver, base_delay=1)
    for _ in range(3):
        sender.drain()
        clock.advance(seconds=60)
    assert deliver.delivered == [(first.id, "one")]
    assert store.outbox.messages(first.id)[0].attempts == 3


def test_two_senders_never_deliver_the_same_message(
    store: Store, workflow: Workflow, planner: Planner, config: Any, script: Path, clock: Clock
) -> None:
    first, _ = two_runs(workflow, planner, config, script)
    store.outbox.enqueue(first.id, "one")
    (head,) = store.outbox.heads()
    assert store.outbox.claim(head, seconds=120)
    assert not store.outbox.claim(head, seconds=120)
    deliver = Script()
    Sender(store=store, deliver=deliver).drain()
    assert deliver.delivered == []  # taken by the first sender, which "died" mid-delivery
    clock.advance(seconds=121)
    Sender(store=store, deliver=deliver).drain()
    assert deliver.delivered == [(first.id, "one")]


def test_migration_0013_lets_a_notice_belong_to_no_run_and_downgrades(
    empty_database_url: str, script: Path
) -> None:
    engine = make_engine(empty_database_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "outbox" in str(d)] == []
    store = Store(engine)
    config = parse_config(config_dict(), path=Path("test.yml"))
    plan = Planner(factory=lambda params: ScriptedTarget(script)).build(
        env_name="prod", env=config.environment("prod"), target="app", point="1"
    )
    _, run = Workflow(store=store, config=config).request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    store.outbox.enqueue(run.id, "person.notice", {"user": ALICE, "text": "about the run"})
    store.outbox.enqueue(None, "person.notice", {"user": ALICE, "text": "about no run"})
    assert [m.detail["text"] for m in store.outbox.messages(None)] == ["about no run"]

    downgrade(engine, "0012")
    with engine.connect() as connection:
        kept = connection.execute(sqlalchemy.text("SELECT run_id FROM outbox")).scalars().all()
    assert set(kept) == {run.id}  # the run's messages stay; the notice of no run is dropped
    (column,) = [
        c for c in sqlalchemy.inspect(engine).get_columns("outbox") if c["name"] == "run_id"
    ]
    assert column["nullable"] is False

    upgrade(engine)
    (column,) = [
        c for c in sqlalchemy.inspect(engine).get_columns("outbox") if c["name"] == "run_id"
    ]
    assert column["nullable"] is True
    with pytest.raises(sqlalchemy.exc.IntegrityError), engine.begin() as connection:
        connection.execute(  # the foreign key to runs survived both copies of the table
            sqlalchemy.text(
                "INSERT INTO outbox (run_id, kind, detail, state, attempts, created_at, "
                "last_error) VALUES ('no-such-run', 'person.notice', '{}', 'pending', 0, "
                "'2026-12-07 00:00:00', '')"
            )
        )
    engine.dispose()


def test_a_message_queued_while_the_thread_is_being_opened_waits_for_the_thread(
    deps: Deps, store: Store, slack: FakeSlack, clock: Clock
) -> None:
    env = deps.config.environment("prod")
    plan = deps.planner.build(env_name="prod", env=env, target="app", point="1")
    incident, run = flows_for(deps).workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    store.outbox.enqueue(run.id, "run.changed")  # a click before the thread exists
    (message,) = store.outbox.messages(run.id)
    outbox = SlackOutbox(deps)
    with pytest.raises(RetryLater, match="being opened"):
        outbox.deliver(message)
    IncidentThread(deps).open(incident, run)
    outbox.deliver(message)  # now drawn into the thread that opened meanwhile
    assert slack.messages(CHANNEL)[0].edits >= 1  # the card, redrawn


def test_a_message_of_a_run_whose_thread_will_never_open_is_given_up(
    deps: Deps, store: Store, clock: Clock
) -> None:
    env = deps.config.environment("prod")
    plan = deps.planner.build(env_name="prod", env=env, target="app", point="1")
    incident, run = flows_for(deps).workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    store.outbox.enqueue(run.id, "run.changed")
    (message,) = store.outbox.messages(run.id)
    store.incidents.resolve(incident.id, at=clock.now)  # its opening failed and closed it
    with pytest.raises(Undeliverable, match="no Slack thread"):
        SlackOutbox(deps).deliver(message)
