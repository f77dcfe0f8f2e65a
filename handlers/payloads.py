"""Slack payloads parsed into typed requests, or a sentence saying what does not fit.

Bolt hands listeners dicts; reading `body["view"]["state"]["values"]...`
straight from them turns every unusual payload (a missing field, a number
where a string belongs, a modal opened by an older version of the bot, under
an older config) into a KeyError, a traceback and a 500. Each listener instead
calls one parser here first: it returns a frozen request record, or raises
`BadPayload` whose message is what the person is told (ephemerally, in the
modal, or as the command's answer). Nothing here does I/O.

The shapes follow Slack's reference for interaction payloads
(https://api.slack.com/reference/interaction-payloads/block-actions,
.../views#view_submission) and slash commands
(https://api.slack.com/interactivity/slash-commands#app_command_handling);
fields we do not use are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.domain.decision import Answers, Severity
from handlers.ids import QUESTION_BLOCKS, Action, Block, ModalMeta

OUTDATED_FORM = (
    "This form was opened by an older version of the bot or under an older configuration. "
    "Close it and type `/rollback` again."
)


class BadPayload(ValueError):
    """A signed payload that does not fit what the listener needs; the message says what."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Id(_Loose):
    id: str


class _Option(_Loose):
    value: str


class _Entry(_Loose):
    selected_option: _Option | None = None
    selected_options: list[_Option] | None = None
    value: str | None = None


class _State(_Loose):
    values: dict[str, dict[str, _Entry]] = {}


class _View(_Loose):
    id: str
    hash: str = ""
    callback_id: str
    private_metadata: str = ""
    state: _State = _State()


class _Container(_Loose):
    message_ts: str | None = None
    thread_ts: str | None = None


class _Action(_Loose):
    action_id: str
    value: str | None = None
    action_ts: str | None = None
    selected_options: list[_Option] | None = None


class _Interaction(_Loose):
    user: _Id
    channel: _Id | None = None
    container: _Container = _Container()
    actions: list[_Action] = []
    view: _View | None = None


@dataclass(frozen=True)
class FormState:
    """What the person has entered in the rollback modal so far."""

    point: str | None = None
    severity: Severity | None = None
    answers: Answers = field(default_factory=Answers)
    summary: str = ""
    ticked: frozenset[str] = frozenset()
    options: frozenset[str] = frozenset()
    confirmation: str = ""
    notify: str | None = None
    """Notify customers: `yes`, `no`, or `policy` (as the config says for the severity)."""


@dataclass(frozen=True)
class Where:
    """Who acted, and where an answer to them goes."""

    user: str
    channel: str | None = None
    thread_ts: str | None = None


@dataclass(frozen=True)
class Click:
    """A button on a thread message: Approve, Reject, Cancel."""

    where: Where
    action_id: str
    run_id: str
    message_ts: str | None


@dataclass(frozen=True)
class Tick:
    """The checklist's boxes as the person left them."""

    where: Where
    message_ts: str
    selected: frozenset[str]
    shown: frozenset[str] | None = None
    """The boxes ticked on the copy of the message the person clicked (None: not sent)."""


@dataclass(frozen=True)
class ModalEvent:
    """A change or the submission of the rollback modal."""

    user: str
    view_id: str
    view_hash: str
    meta: ModalMeta
    form: FormState
    stamp: float = 0.0


@dataclass(frozen=True)
class SlashCommand:
    """`/rollback <text>` as typed."""

    user: str
    channel: str
    trigger_id: str
    text: str


def _interaction(body: dict[str, Any]) -> _Interaction:
    try:
        return _Interaction.model_validate(body)
    except ValidationError as exc:
        problem = _first(exc)
        raise BadPayload(f"Slack sent an interaction the bot cannot read ({problem}).") from None


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "payload"
    return f"{where}: {error['msg'].lower()}"


def where_of(body: dict[str, Any]) -> Where | None:
    """Return who to answer for any interaction or command body, or None if nobody is named."""
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else body.get("user_id")
    if not isinstance(user_id, str):
        return None
    channel = body.get("channel")
    channel_id = channel.get("id") if isinstance(channel, dict) else body.get("channel_id")
    container = body.get("container")
    thread = container.get("thread_ts") if isinstance(container, dict) else None
    return Where(
        user=user_id,
        channel=channel_id if isinstance(channel_id, str) else None,
        thread_ts=thread if isinstance(thread, str) else None,
    )


def click(body: dict[str, Any]) -> Click:
    """Parse a click on an Approve / Reject / Cancel button."""
    parsed = _interaction(body)
    action = parsed.actions[0] if parsed.actions else None
    if action is None or not action.value:
        raise BadPayload("This button carries no rollback; it may be from an older message.")
    return Click(
        where=_where(parsed),
        action_id=action.action_id,
        run_id=action.value,
        message_ts=parsed.container.message_ts,
    )


def tick(body: dict[str, Any]) -> Tick:
    """Parse a change of the verification checklist's boxes."""
    parsed = _interaction(body)
    if parsed.channel is None or not parsed.container.message_ts or not parsed.actions:
        raise BadPayload("This checklist click did not say which message it came from.")
    chosen = parsed.actions[0].selected_options or []
    return Tick(
        where=_where(parsed),
        message_ts=parsed.container.message_ts,
        selected=frozenset(o.value for o in chosen),
        shown=_shown_ticks(body, parsed.actions[0].action_id),
    )


def _shown_ticks(body: dict[str, Any], action_id: str) -> frozenset[str] | None:
    """The ticks the clicked copy showed: its checkboxes' initial_options in `message.blocks`.

    Slack sends the message as the person saw it with a block_actions payload
    (https://api.slack.com/reference/interaction-payloads/block-actions); comparing it with
    `selected_options` says what this person toggled, even on an older copy.
    """
    message = body.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("blocks"), list):
        return None
    for block in message["blocks"]:
        element = block.get("accessory") if isinstance(block, dict) else None
        if isinstance(element, dict) and element.get("action_id") == action_id:
            shown = element.get("initial_options") or []
            return frozenset(str(o.get("value")) for o in shown if isinstance(o, dict))
    return None


def _where(parsed: _Interaction) -> Where:
    return Where(
        user=parsed.user.id,
        channel=parsed.channel.id if parsed.channel else None,
        thread_ts=parsed.container.thread_ts,
    )


def modal_event(body: dict[str, Any]) -> ModalEvent:
    """Parse a change or submission of the rollback modal, its metadata and its state."""
    parsed = _interaction(body)
    if parsed.view is None:
        raise BadPayload("Slack sent a modal event without its view.")
    view = parsed.view
    try:
        meta = ModalMeta.load(view.private_metadata)
    except ValidationError:
        raise BadPayload(OUTDATED_FORM) from None
    stamps = [float(a.action_ts or 0) for a in parsed.actions if _is_number(a.action_ts)]
    return ModalEvent(
        user=parsed.user.id,
        view_id=view.id,
        view_hash=view.hash,
        meta=meta,
        form=read_state(view.state),
        stamp=max(stamps, default=0.0),
    )


def _is_number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True


def read_state(state: _State) -> FormState:
    """Turn a view's state into a FormState; an option the bot never offered is refused."""

    def get(block: str, action: str) -> _Entry:
        return state.values.get(block, {}).get(action) or _Entry()

    def selected(block: str, action: str) -> str | None:
        option = get(block, action).selected_option
        return option.value if option else None

    def many(block: str, action: str) -> frozenset[str]:
        return frozenset(o.value for o in get(block, action).selected_options or [])

    answers: dict[str, bool | None] = {}
    for name, (block, action) in QUESTION_BLOCKS.items():
        value = selected(block, action)
        if value not in (None, "yes", "no"):
            raise BadPayload(OUTDATED_FORM)
        answers[name] = None if value is None else value == "yes"
    severity = selected(Block.SEVERITY, Action.SEVERITY)
    if severity is not None and severity not in {s.value for s in Severity}:
        raise BadPayload(OUTDATED_FORM)
    notify = selected(Block.NOTIFY, Action.NOTIFY)
    if notify not in (None, "yes", "no", "policy"):
        raise BadPayload(OUTDATED_FORM)
    return FormState(
        point=selected(Block.POINT, Action.POINT),
        severity=Severity(severity) if severity else None,
        answers=Answers(**answers),
        summary=get(Block.SUMMARY, Action.SUMMARY).value or "",
        ticked=many(Block.PERSON_CHECKS, Action.PERSON_CHECKS),
        options=many(Block.OPTIONS, Action.OPTIONS),
        confirmation=(get(Block.CONFIRM, Action.CONFIRM).value or "").strip(),
        notify=notify,
    )


def slash_command(body: dict[str, Any]) -> SlashCommand:
    """Parse a slash command's form fields."""
    fields = {k: body.get(k) for k in ("user_id", "channel_id", "trigger_id", "text")}
    missing = [k for k in ("user_id", "channel_id", "trigger_id") if not isinstance(fields[k], str)]
    if missing:
        raise BadPayload(f"Slack sent the command without {', '.join(missing)}; try again.")
    text = fields["text"] if isinstance(fields["text"], str) else ""
    return SlashCommand(
        user=str(fields["user_id"]),
        channel=str(fields["channel_id"]),
        trigger_id=str(fields["trigger_id"]),
        text=text,
    )
