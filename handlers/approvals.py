"""The thread's buttons (Approve, Reject, Cancel; after a failure Retry failed step, Leave
maintenance on, Turn maintenance off, Re-plan) and the people's checklist ticks.

Each listener acks at once, parses the payload into a typed request
(`handlers.payloads`), calls one flow (`bot.application.flows`) and answers a refusal
ephemerally to the person who clicked; nothing changes on a refusal. Who the
user is comes from Slack's signed payload; which approver groups they are in
is asked of Slack (`handlers.flows.Groups`). A click acts once per person,
button and message (`click_key`): a double click or Slack's retry is told
what the first did; a refused click is forgotten, so it may count later.
The rules (two people, one exact plan, who may cancel) live in the flows and
the workflow, not here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from bot.application.flows import Flows
from bot.config import UnknownTarget
from bot.domain.records import RunRecord
from bot.execution.workflow import Refused
from handlers import payloads
from handlers.deps import Deps
from handlers.errors import tell
from handlers.flows import Groups, flows_for
from handlers.ids import Action
from handlers.lazy import after_ack
from handlers.listen import Listener, on_run
from handlers.modals import ModalService
from handlers.payloads import BadPayload, Click, Tick, Where

log = logging.getLogger(__name__)
Verb = Callable[[Click, RunRecord], str]


def _verbs(flows: Flows, groups: Groups, deps: Deps) -> dict[Action, Verb]:
    """Each button's flow; each returns what it did, for a repeated click to be told."""

    def verb(flow: Callable[..., Any], said: Callable[[Any], str]) -> Verb:
        def apply(c: Click, run: RunRecord) -> str:
            user_groups = groups.of(run.environment, c.where.user)
            return said(flow(c.run_id, user=c.where.user, user_groups=user_groups))

        return apply

    def rearmed(_: object) -> str:
        deps.home.changed.set()  # the home tabs drop the disarmed line
        return "you re-armed automatic rollback"

    return {
        Action.RESOLVE: verb(flows.failures.resolve, lambda _: "you marked it resolved"),
        Action.REARM: verb(flows.failures.rearm, rearmed),
        Action.APPROVE: verb(flows.approve, lambda done: f"you approved it: {done.message}"),
        Action.REJECT: verb(flows.reject, lambda _: "you rejected it"),
        Action.CANCEL: verb(flows.cancel, lambda _: "you cancelled it"),
        Action.RETRY: verb(
            flows.failures.retry_failed, lambda _: "you retried it from the failed step"
        ),
        Action.LEAVE_MAINTENANCE_ON: verb(
            flows.failures.leave_maintenance_on, lambda _: "you decided to leave maintenance on"
        ),
        Action.MAINTENANCE_OFF: verb(
            flows.failures.turn_maintenance_off, lambda said: f"you turned maintenance off ({said})"
        ),
    }


def click_key(click: Click) -> str:
    """One person's click of one button on one message: a double click or a retry repeats it."""
    return f"click:{click.message_ts}:{click.action_id}:{click.where.user}"


def button(deps: Deps, flows: Flows, verb: Verb) -> Listener:
    """A listener that applies `verb` once and explains a repeat (a refusal: `on_run`)."""

    @on_run(deps, payloads.click, lambda click: click.run_id)
    def clicked(click: Click, run: RunRecord, client: WebClient) -> None:
        key = click_key(click)
        received = flows.receive(key)
        if not received.first:
            tell(client, click.where, f":information_source: {received.repeated('click')}")
            return
        try:
            with flows.planner.request():  # the run and the target read once for the click
                done = verb(click, run)
            flows.settle(key, done)
        except (Refused, UnknownTarget):
            flows.release(key)  # it changed nothing, so the same click may count later
            raise

    return clicked


@dataclass(frozen=True)
class ReplanClick:
    """A Re-plan click and the trigger its form opens with."""

    click: Click
    trigger: str

    @property
    def where(self) -> Where:
        return self.click.where


def _replan_click(body: dict[str, Any]) -> ReplanClick:
    click = payloads.click(body)
    trigger = body.get("trigger_id")
    if not isinstance(trigger, str):
        raise BadPayload("This click carries no trigger; click Re-plan again.")
    return ReplanClick(click, trigger)


def _run_of_message(deps: Deps, channel: str | None, ts: str) -> str | None:
    return deps.reads.run_of_post(channel=channel, ts=ts)  # slack_messages(channel, ts)


def register(app: App, deps: Deps) -> None:
    """Listen for the thread's buttons and checkboxes."""
    flows = flows_for(deps)
    for action_id, verb in _verbs(flows, Groups(deps), deps).items():
        app.action(action_id)(after_ack(deps.later)(button(deps, flows, verb)))

    modals = ModalService(deps)

    @app.action(Action.REPLAN)
    @after_ack(deps.later)
    @on_run(deps, _replan_click, lambda replan: replan.click.run_id)
    def replan(replan: ReplanClick, run: RunRecord, client: WebClient) -> None:
        user = replan.where.user
        flows.replace_stale(run.id, user=user)
        modals.replan(
            trigger_id=replan.trigger, run=run, user=user, channel=replan.where.channel or ""
        )

    @app.action(Action.VERIFY)
    @after_ack(deps.later)
    @on_run(
        deps,
        payloads.tick,
        lambda tick: _run_of_message(deps, tick.where.channel, tick.message_ts),
        gone="This checklist belongs to no known rollback.",
    )
    def ticked(tick: Tick, run: RunRecord, client: WebClient) -> None:
        flows.tick_checklist(
            run.id,
            user=tick.where.user,
            selected=tick.selected,
            shown=tick.shown,
            user_groups=Groups(deps).of(run.environment, tick.where.user),
        )
