"""The bot's outbox against fake Slack, as fixtures (`slack`, `deps`; modules load this as a
plugin) and helpers: a run to report on, a runner, a sender driven round by round.

Imported by test modules before pytest loads it as their plugin: PYTEST_DONT_REWRITE."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from actions.http import read_metrics
from bot.app import wire
from bot.config import RollbackConfig
from bot.domain.decision import Answers, Severity
from bot.execution.outbox import Sender
from bot.execution.planner import Planner
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store
from handlers.deps import Deps
from handlers.flows import flows_for
from handlers.progress import SlackProgress
from handlers.thread import IncidentThread
from sandbox.slack import FakeSlack
from tests.fakes.config import ALICE, BOB, CHANNEL, Clock


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("incidents", channel_id=CHANNEL)
        yield fake


@pytest.fixture
def deps(
    slack: FakeSlack, store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner
) -> Deps:
    # slack_sdk's default retry (one, after a dropped connection), without its 0.5-1.5 s wait
    retry = ConnectionErrorRetryHandler(interval_calculator=FixedValueRetryIntervalCalculator(0.01))
    client = WebClient(token=slack.token, base_url=slack.url, timeout=15, retry_handlers=[retry])
    return wire(
        store,
        config=config,
        workflow=workflow,
        planner=planner,
        client=client,
        metrics_reader=read_metrics,
    )


def opened_run(deps: Deps) -> Run:
    env = deps.config.environment("prod")
    plan = flows_for(deps).planner.build(env_name="prod", env=env, target="app", point="1")
    incident, run = flows_for(deps).workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    IncidentThread(deps).open(incident, run)
    return flows_for(deps).workflow.approve(run.id, user=BOB).run


def runner_for(deps: Deps, sender: Sender) -> Runner:
    return Runner(
        store=flows_for(deps).store,
        workflow=flows_for(deps).workflow,
        config=deps.config,
        planner=flows_for(deps).planner,
        progress=SlackProgress(sender.wake),
        sleep=lambda s: None,
    )


def deliver_all(sender: Sender, clock: Clock, *, rounds: int = 300) -> None:
    """Deliver until nothing is pending, moving the test clock past every backoff."""
    for _ in range(rounds):
        sender.deliver_due()
        if not sender.store.outbox.heads():
            return
        clock.advance(seconds=600)
    raise AssertionError("the outbox never emptied")


def thread_texts(slack: FakeSlack, run: Run, store: Store) -> list[str]:
    incident = store.incidents.get(run.incident_id)
    assert incident is not None and incident.card_ts is not None
    return [m.text for m in slack.thread(CHANNEL, incident.card_ts)[1:]]


EXPECTED = [
    "Rollback plan for app in prod: succeeded",
    "Rollback progress: succeeded",
    "Post-rollback verification checklist",
    "Root-cause-analysis template, timeline filled from the audit log. "
    "Download, complete and share it.",
]
