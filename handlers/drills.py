"""`/rollback drill <target> <env>` and `/rollback drills`.

Registered before `handlers.commands`, with a matcher on the first word, so
Bolt hands these two subcommands here and every other `/rollback` to the
commands module. A drill is refused at once, in the ack, where the config does
not allow it (production by default, except a database's restore drill, which
writes nothing live) and when the text is malformed; nothing
is then recorded. Otherwise the ack says the drill is being planned, and the
plan, the request and the thread (`bot.application.drills.Drills.open`) follow on
`deps.later`, once per trigger id like every command that acts.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.application.chart import trend_chart, trend_filename
from bot.application.drill_schedule import NOT_STARTED, OVERDUE
from bot.application.drills import FLAGGED, TREND_CHART, Drills
from bot.application.requests import ThreadNotOpened
from bot.config import UnknownTarget
from bot.domain.records import OutboxRecord, RunRecord
from bot.domain.states import OutboxState
from bot.execution.drill_plans import drill_allowed
from bot.execution.outbox import Undeliverable
from bot.execution.workflow import Refused
from handlers import command_blocks, drill_blocks
from handlers import text as t
from handlers.delivery import delivery_error
from handlers.deps import Deps
from handlers.errors import tell
from handlers.flows import drills_for
from handlers.lazy import Arrivals, act_once
from handlers.payloads import BadPayload, SlashCommand, Where, slash_command
from handlers.text import permalink

if TYPE_CHECKING:  # the outbox renders through the thread, which imports these handlers' blocks
    from handlers.thread import IncidentThread

WORDS = ("drill", "drills")


class DrillCommandError(ValueError):
    """The drill command's text is not in the grammar."""


@dataclass(frozen=True)
class DrillRequest:
    target: str
    environment: str


@dataclass(frozen=True)
class DrillList:
    pass


def parse(text: str) -> DrillRequest | DrillList:
    """Parse `drill <target> <env>` or `drills`, or raise DrillCommandError."""
    words = text.split()
    head = words[0].lower() if words else ""
    if head == "drills":
        if len(words) != 1:
            raise DrillCommandError("`drills` takes no arguments: `/rollback drills`")
        return DrillList()
    if head != "drill" or len(words) != 3:
        raise DrillCommandError(
            "`drill` needs a target and an environment: `/rollback drill <target> <env>`"
        )
    return DrillRequest(target=words[1].lower(), environment=words[2].lower())


def is_drill_command(body: dict[str, Any]) -> bool:
    """Bolt matcher: the command's first word is `drill` or `drills`."""
    words = str(body.get("text") or "").split()
    return bool(words) and words[0].lower() in WORDS


def _flagged(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """Say in the drill's thread why the scheduled drill is flagged (once)."""
    text = drill_blocks.flagged_text(run, dict(message.detail or {}))
    thread.say(run, text, slot=f"drill.flagged:{message.id}")


def _overdue(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """Say in the environment's incident channel (not a thread) that the target's scheduled
    drills are overdue; once per period, even where two replicas queued it."""
    _once_in_channel(
        thread,
        message,
        among=thread.deps.reads.outbox(run.id, kind=OVERDUE),
        same=("period",),
        environment=run.environment,
        text=drill_blocks.overdue_text,
    )


def _once_in_channel(
    thread: IncidentThread,
    message: OutboxRecord,
    *,
    among: list[OutboxRecord],
    same: tuple[str, ...],
    environment: str,
    text: Callable[[dict[str, Any]], str],
) -> None:
    """Post `text(detail)` in `environment`'s incident channel, unless a message of `among`
    sent before this one had the same `same` fields (two replicas queued it)."""
    detail = dict(message.detail or {})
    if any(
        m.id < message.id
        and m.state == OutboxState.SENT
        and all(m.detail.get(k) == detail.get(k) for k in same)
        for m in among
    ):
        return
    env = thread.deps.config.environments.get(environment)
    if env is None:
        raise Undeliverable(f"environment {environment} is no longer in the config")
    try:
        thread.client.chat_postMessage(channel=env.incident_channel, text=text(detail))
    except (SlackApiError, OSError, http.client.HTTPException) as exc:
        raise delivery_error("chat_postMessage", exc) from exc


def _trend(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """Upload the target's trend chart into the drill's thread (once): its last drills'
    times to recover and its real rollbacks', with the RTO; nothing when there is none."""
    reads = thread.deps.reads
    if reads.post(run.id, TREND_CHART) is not None:
        return
    status = reads.drill_status(run.environment, run.target)
    if status is None:
        return
    series = [
        ("drills: time to recover", status.trend),
        ("real rollbacks: approval to success", status.rollbacks),
    ]
    rto = status.rto.total_seconds() if status.rto is not None else None
    if not status.trend and not status.rollbacks:
        return
    chart = trend_chart(f"{run.target} in {run.environment}: time to recover", series, rto=rto)
    try:
        uploaded = thread.client.files_upload_v2(
            channel=run.slack["channel"],
            thread_ts=run.slack["thread_ts"],
            file_uploads=[
                {
                    "filename": trend_filename(run.incident_id),
                    "title": f"{run.target} in {run.environment}: time to recover, trend",
                    "file": chart.png,
                }
            ],
            initial_comment=drill_blocks.trend_comment(status),
        )
    except (SlackApiError, OSError, http.client.HTTPException) as exc:
        raise delivery_error("files_upload_v2", exc) from exc
    files = uploaded.get("files") or [uploaded.get("file") or {}]
    file_id = str((files[0] or {}).get("id") or "uploaded")
    thread.posted.message(run.id, TREND_CHART, channel=run.slack["channel"], ts=file_id)


def _not_started(thread: IncidentThread, message: OutboxRecord) -> None:
    """Say in the environment's incident channel that a scheduled drill could not start, and
    why; once per slot, even where two replicas queued it."""
    _once_in_channel(
        thread,
        message,
        among=thread.deps.reads.outbox(None, kind=NOT_STARTED),
        same=("environment", "target", "slot"),
        environment=str((message.detail or {}).get("environment")),
        text=drill_blocks.not_started_text,
    )


MESSAGES: dict[str, Callable[[IncidentThread, RunRecord, OutboxRecord], None]] = {
    FLAGGED: _flagged,
    OVERDUE: _overdue,
    TREND_CHART: _trend,
}
"""Outbox kinds rendered here (`handlers.outbox.SlackOutbox(more=...)`)."""

ALONE: dict[str, Callable[[IncidentThread, OutboxRecord], None]] = {NOT_STARTED: _not_started}
"""Outbox kinds of no run rendered here (`handlers.outbox.SlackOutbox(alone=...)`)."""


def register(app: App, deps: Deps) -> None:
    """Listen for `/rollback drill …` and `/rollback drills` (before handlers.commands)."""
    drills = drills_for(deps)
    arrivals = Arrivals()

    @app.command("/rollback", matchers=[is_drill_command])
    def drill(ack: Ack, command: dict[str, Any], client: WebClient) -> None:
        try:
            typed = slash_command(command)
            parsed = parse(typed.text)
            if isinstance(parsed, DrillRequest):
                refusal = _refusal(deps, parsed)
                if refusal:
                    ack(
                        response_type="ephemeral",
                        blocks=command_blocks.refusal(refusal),
                        text=refusal,
                    )
                    return
        except (BadPayload, DrillCommandError, UnknownTarget) as exc:
            said = t.esc(str(exc))
            ack(blocks=command_blocks.refusal(said, usage=True), text=said)
            return
        if isinstance(parsed, DrillList):
            statuses = drills.statuses()
            ack(
                response_type="ephemeral",
                blocks=drill_blocks.drills_message(statuses),
                text="Rollback drills",
            )
            return
        _start(
            ack, deps, drills=drills, typed=typed, parsed=parsed, client=client, arrivals=arrivals
        )


def _refusal(deps: Deps, parsed: DrillRequest) -> str:
    """Why the drill may not run at all (config), or empty; raises UnknownTarget."""
    deps.config.target(parsed.environment, parsed.target)
    env = deps.config.environment(parsed.environment)
    if drill_allowed(env, parsed.environment, parsed.target):
        return ""
    return (
        f"No drill: drills are not allowed in {t.esc(parsed.environment)} "
        "(a drill really rolls the target back and forward; production is refused unless "
        "its config says `drills_allowed: true`). Drill a staging environment instead."
    )


def _start(
    ack: Ack,
    deps: Deps,
    *,
    drills: Drills,
    typed: SlashCommand,
    parsed: DrillRequest,
    client: WebClient,
    arrivals: Arrivals,
) -> None:
    """Ack before any database or Slack call (a retry to this process is answered from
    memory), then plan the drill on the work pool."""
    key = f"command:{typed.trigger_id}"
    where = Where(user=typed.user, channel=typed.channel)
    act_once(
        ack,
        partial(_open, drills, client, where=where, parsed=parsed, key=key, arrivals=arrivals),
        later=deps.later,
        arrivals=arrivals,
        key=key,
        what="command",
        answer={
            "response_type": "ephemeral",
            "text": f":hourglass: Planning the drill of {t.esc(parsed.target)} in "
            f"{t.esc(parsed.environment)}…",
        },
        client=client,
        where=where,
    )


def _open(
    drills: Drills,
    client: WebClient,
    *,
    where: Where,
    parsed: DrillRequest,
    key: str,
    arrivals: Arrivals,
) -> None:
    """After the ack: record the command once, plan, request and open the drill's thread;
    tell the person how it went."""
    received = arrivals.record(drills.flows, key)
    if not received.first:
        tell(client, where, f":information_source: {received.repeated('command')}")
        return
    try:
        opened = drills.open(
            environment=parsed.environment, target=parsed.target, requester=where.user
        )
    except Refused as exc:
        drills.flows.release(key)  # nothing changed: the same command may act later
        arrivals.forget(key)
        tell(client, where, f":warning: No drill: {t.esc(exc)}.")
        return
    except ThreadNotOpened as exc:
        said = f":warning: The drill's thread could not be opened: {exc.reason}. {exc.advice}"
    else:
        run = opened.run
        link = permalink(run.slack["channel"], run.slack["thread_ts"])
        need = run.approvals_required
        said = (
            f":test_tube: Drill {opened.incident.id} planned: {t.esc(parsed.target)} in "
            f"{t.esc(parsed.environment)} goes back and forward again once {need} approver(s) "
            f"approve.\n{link}"
        )
    arrivals.done(drills.flows, key, said)
    tell(client, where, said)
