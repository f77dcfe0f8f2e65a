"""`/rollback`: the grammar and its dispatch.

    /rollback <target> <env> [to <revision|timestamp|backup>]
    /rollback status [INC-…]
    /rollback cancel INC-…
    /rollback history <target> <env>
    /rollback clear <target> <env> <version> <reason>
    /rollback help

Parsing is a pure function so every malformed command is tested without
Slack; anything it cannot parse is answered with what was wrong and the
usage, ephemerally, never a stack trace. A command that acts (opening the
form, `cancel`) acts once per trigger id: a retry (X-Slack-Retry-Num) or a
replayed body is answered "already received" and changes nothing. Both ack
before any database, Slack or Kubernetes call (`Arrivals` answers a retry from
memory; the durable once-only record is written after the ack). Opening the
form then opens a "Loading…" view with the trigger id on the work pool; the
rollback points and checks, which talk to the target system, fill it in
afterwards. `cancel` acks "Cancelling…" and tells the person what it did
ephemerally once it is done. `status`, `history` and `help` answer in the ack:
`help` from memory, the other two with one indexed read of the bot's own
database, no Slack or target call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from bot.application.flows import Flows
from bot.config import UnknownTarget
from bot.domain.records import RunRecord
from bot.domain.states import ACTIVE_STATES
from bot.domain.versions import MalformedVersion
from bot.execution.workflow import Refused
from handlers import blocks, command_blocks, review_blocks
from handlers import guard as guard_texts
from handlers import text as t
from handlers.deps import Deps
from handlers.errors import correlation_id, tell
from handlers.flows import Groups, flows_for
from handlers.guard import Clear, Clearing
from handlers.ids import ModalMeta
from handlers.lazy import Arrivals, act_once
from handlers.modal_blocks import message_view
from handlers.modals import ModalService
from handlers.payloads import BadPayload, SlashCommand, Where, slash_command

log = logging.getLogger(__name__)
_INCIDENT = re.compile(r"^INC-\d{8}-\d{6}(-\d+)?$")


class CommandError(ValueError):
    """The command text is not in the grammar; the message says what is wrong."""


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Status:
    incident_id: str | None = None


@dataclass(frozen=True)
class Cancel:
    incident_id: str


@dataclass(frozen=True)
class History:
    target: str
    environment: str


@dataclass(frozen=True)
class Rollback:
    target: str
    environment: str
    point: str | None = None


Command = Help | Status | Cancel | History | Clear | Rollback


def parse(text: str) -> Command:
    """Parse the text after `/rollback`, or raise CommandError."""
    words = text.split()
    if not words or words == ["help"]:
        return Help()
    head, rest = words[0].lower(), words[1:]
    subcommand = _SUBCOMMANDS.get(head)
    if subcommand is not None:
        return subcommand(rest)
    if not rest:
        raise CommandError(f"`{words[0]}` needs an environment: `/rollback {words[0]} <env>`")
    target, environment, tail = head, rest[0].lower(), rest[1:]
    if not tail:
        return Rollback(target=target, environment=environment)
    if tail[0].lower() != "to" or len(tail) < 2:
        raise CommandError(f"expected `to <revision|timestamp|backup>` after `{environment}`")
    return Rollback(target=target, environment=environment, point=" ".join(tail[1:]))


def _parse_status(rest: list[str]) -> Status:
    if len(rest) > 1:
        raise CommandError("`status` takes at most one incident id")
    if rest and not _INCIDENT.match(rest[0]):
        raise CommandError(f"`{rest[0]}` is not an incident id (INC-YYYYMMDD-HHMMSS)")
    return Status(rest[0] if rest else None)


def _parse_cancel(rest: list[str]) -> Cancel:
    if len(rest) != 1 or not _INCIDENT.match(rest[0]):
        raise CommandError("`cancel` needs one incident id: `/rollback cancel INC-…`")
    return Cancel(rest[0])


def _parse_history(rest: list[str]) -> History:
    if len(rest) != 2:
        raise CommandError("`history` needs a target and an environment")
    return History(target=rest[0].lower(), environment=rest[1].lower())


def _parse_help(rest: list[str]) -> Help:
    raise CommandError("`help` takes no arguments")


def _parse_clear(rest: list[str]) -> Clear:
    if len(rest) < 3:
        raise CommandError(
            "`clear` needs a target, an environment, a version and why it is safe again: "
            "`/rollback clear app prod v1.2.5 fixed in v1.2.6`"
        )
    target, environment, version, *why = rest
    reason = " ".join(why)
    if reason.lower().startswith("cleared:"):
        reason = reason[len("cleared:") :].strip()
    if not reason:
        raise CommandError(
            f"say why `{version}` is safe again: `/rollback clear {target} {environment} "
            f"{version} fixed in v1.2.6`"
        )
    return Clear(target.lower(), environment.lower(), version, reason)


_SUBCOMMANDS: dict[str, Callable[[list[str]], Command]] = {
    "status": _parse_status,
    "cancel": _parse_cancel,
    "history": _parse_history,
    "clear": _parse_clear,
    "help": _parse_help,
}
"""The words that are subcommands, not a target; each parses its own arguments."""


def register(app: App, deps: Deps) -> None:
    """Listen for /rollback."""
    modals = ModalService(deps)
    groups = Groups(deps)
    arrivals = Arrivals()
    guard = flows_for(deps).guard

    @app.command("/rollback")
    def rollback(
        ack: Ack, command: dict[str, Any], request: BoltRequest, client: WebClient
    ) -> None:
        try:
            typed = slash_command(command)
            parsed = parse(typed.text)
            if isinstance(parsed, Rollback):
                deps.config.target(parsed.environment, parsed.target)
            if isinstance(parsed, Clear):
                guard.check(
                    environment=parsed.environment, target=parsed.target, version=parsed.version
                )
        except (BadPayload, CommandError, UnknownTarget, MalformedVersion) as exc:
            said = t.esc(str(exc))  # it may quote what was typed
            ack(blocks=command_blocks.refusal(said, usage=True), text=said)
            return
        if not isinstance(parsed, Rollback | Cancel | Clear):
            ack(response_type="ephemeral", **_answered(parsed, deps))
            return
        key, what = f"command:{typed.trigger_id}", _what(request)
        where = Where(user=typed.user, channel=typed.channel)
        work: Callable[[], None]
        if isinstance(parsed, Clear):
            answer: dict[str, Any] = {
                "response_type": "ephemeral",
                "text": f":hourglass_flowing_sand: Clearing {t.esc(parsed.version)} of "
                f"{t.esc(parsed.target)} in {t.esc(parsed.environment)}…",
            }
            changed = deps.home.changed
            work = Clearing(
                where, client, key, parsed, guard, modals.flows, groups, arrivals, what, changed
            )
        elif isinstance(parsed, Cancel):
            answer = {
                "response_type": "ephemeral",
                "text": ":hourglass_flowing_sand: Cancelling the rollback of "
                f"{parsed.incident_id}…",
            }
            work = _Cancelling(where, client, key, parsed, modals.flows, groups, arrivals, what)
        else:
            answer = {}
            work = _Opening(typed, client, parsed, modals, key, arrivals, what)
        act_once(
            ack,
            work,
            later=deps.later,
            arrivals=arrivals,
            key=key,
            what=what,
            answer=answer,
            client=client,
            where=where,
        )


@dataclass(frozen=True)
class _Opening:
    """After the ack (on `deps.later`): record the trigger once, open the form, settle it."""

    typed: SlashCommand
    client: WebClient
    parsed: Rollback
    modals: ModalService
    key: str
    arrivals: Arrivals
    what: str

    def __call__(self) -> None:
        flows = self.modals.flows
        received = self.arrivals.record(flows, self.key)
        if not received.first:
            where = Where(user=self.typed.user, channel=self.typed.channel)
            tell(self.client, where, f":information_source: {received.repeated(self.what)}")
            return
        with self.modals.deps.planner.request():  # points and checks from one read
            _open_modal(self.typed, self.client, self.parsed, self.modals)
        outcome = "the rollback form was opened"
        self.arrivals.done(flows, self.key, outcome)


@dataclass(frozen=True)
class _Cancelling:
    """After the ack (on `deps.later`): cancel once per trigger id, tell the person what
    happened. The ack only says the cancel was received: finding the run, asking Slack
    for the person's groups and writing the cancel wait for nobody's ack."""

    where: Where
    client: WebClient
    key: str
    parsed: Cancel
    flows: Flows
    groups: Groups
    arrivals: Arrivals
    what: str

    def __call__(self) -> None:
        received = self.arrivals.record(self.flows, self.key)
        if not received.first:
            tell(self.client, self.where, f":information_source: {received.repeated(self.what)}")
            return
        text = _cancel(self.parsed, self.where.user, self.flows, self.groups)
        self.arrivals.done(self.flows, self.key, text)
        tell(self.client, self.where, text)


def _what(request: BoltRequest) -> str:
    """Name a repeated command, with Slack's retry headers when it sent them."""
    retry = next(iter(request.headers.get("x-slack-retry-num") or []), None)
    reason = next(iter(request.headers.get("x-slack-retry-reason") or []), "unknown")
    return f"command (Slack's retry {retry}: {reason})" if retry else "command"


def _cancel(parsed: Cancel, user: str, flows: Flows, groups: Groups) -> str:
    """Cancel the incident's waiting rollback for its requester or an approver."""
    try:
        run = flows.cancellable_run(parsed.incident_id)
        flows.cancel(run.id, user=user, user_groups=groups.of(run.environment, user))
    except Refused as exc:
        return f":warning: Not cancelled: {t.esc(exc)}."
    return (
        f":heavy_minus_sign: Cancelled the rollback of {t.esc(run.target)} in "
        f"{t.esc(run.environment)} "
        f"({parsed.incident_id}); nothing will run and the target is free."
    )


def _answered(parsed: Command, deps: Deps) -> dict[str, Any]:
    """The ack of a command answered at once; a message, never an error, when the bot's
    database does not answer (an outage must not turn `/rollback status` into HTTP 500)."""
    try:
        return {"blocks": _answer(parsed, deps), "text": "rollback-bot"}
    except Exception as exc:
        ref = correlation_id()
        log.error("/rollback could not be answered [%s]: %s", ref, exc, exc_info=exc)
        return {
            "text": ":warning: The bot cannot read its database right now, so it cannot "
            f"answer; try again in a minute. Reference {ref}."
        }


def _answer(parsed: Command, deps: Deps) -> list[Any]:
    if isinstance(parsed, Help):
        targets = {n: list(e.targets) for n, e in deps.config.environments.items()}
        return [*command_blocks.help_message(targets), t.section(guard_texts.USAGE)]
    if isinstance(parsed, Status):
        return _status(parsed, deps)
    assert isinstance(parsed, History)
    try:
        deps.config.target(parsed.environment, parsed.target)
    except UnknownTarget as exc:
        return command_blocks.refusal(t.esc(exc), usage=True)
    runs = deps.reads.runs(environment=parsed.environment, target=parsed.target, limit=20)
    lines = [_line(r, deps) for r in runs]
    return command_blocks.lines_message(
        f"Rollback history of {t.esc(parsed.target)} in {t.esc(parsed.environment)}", lines
    )


def _line(run: RunRecord, deps: Deps) -> str:
    """A run's line with its exact approval state (who approved, who still may, the deadline)
    and a link to its thread."""
    try:
        approvers = deps.config.environment(run.environment).approvers
    except UnknownTarget:  # the environment left the config since
        approvers = None
    line = command_blocks.run_line(run, deps.reads.approvals(run), approvers=approvers)
    link = t.thread_link(run.slack)
    return f"{line} · <{link}|thread>" if link else line


def review_lines(deps: Deps) -> list[str]:
    """The break-glass runs whose mandatory review is not done yet, oldest first."""
    lines = []
    for review in deps.reads.unreviewed():
        run = deps.reads.run(review.run_id)
        link = t.thread_link(run.slack) if run is not None else None
        lines.append(review_blocks.review_line(review, link=link))
    return lines


def _status(parsed: Status, deps: Deps) -> list[Any]:
    if parsed.incident_id is None:
        runs = deps.reads.runs(states=ACTIVE_STATES)
        lines = [_line(r, deps) for r in runs]
        said = command_blocks.lines_message("Active rollbacks", lines)
        failed = deps.reads.unresolved_failures()
        if failed:
            said += command_blocks.lines_message(
                "Failed and not resolved (Mark resolved in the thread once handled)",
                [_line(r, deps) for r in failed],
            )
        waiting = review_lines(deps)
        if waiting:
            said += command_blocks.lines_message("Break-glass rollbacks awaiting review", waiting)
        return said[: t.MESSAGE_BLOCKS]
    incident = deps.reads.incident(parsed.incident_id)
    if incident is None:
        return command_blocks.refusal(f"no incident {parsed.incident_id}")
    runs = deps.reads.runs(incident_id=incident.id)
    lines = [_line(r, deps) for r in runs]
    lines += [
        f"Outcome: {blocks.outcome_words(r, deps.reads.aftermath(r))}" for r in runs if r.outcome
    ]
    reviews = [deps.reads.review(r.id) for r in runs if r.break_glass]
    lines += [f"Break-glass: {review_blocks.review_state(r)}" for r in reviews if r is not None]
    return command_blocks.lines_message(
        f"{incident.id}: {t.esc(incident.target)} in {t.esc(incident.environment)}", lines
    )


def _open_modal(
    command: SlashCommand, client: WebClient, parsed: Rollback, modals: ModalService
) -> None:
    meta = ModalMeta(
        environment=parsed.environment,
        target=parsed.target,
        requester=command.user,
        channel_id=command.channel,
        point_hint=parsed.point,
    )
    opened = client.views_open(
        trigger_id=command.trigger_id,
        view=message_view(
            meta, "Roll back", f"Loading rollback points for *{t.esc(parsed.target)}*…"
        ),
    )
    modals.fill(view_id=opened["view"]["id"], meta=meta)
