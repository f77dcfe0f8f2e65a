"""Pure builders for the rollback modal: the decision matrix, rollback point and checklist.

The modal is rebuilt from the same inputs every time an answer changes, so
the recommendation shown is always the one `bot.domain.decision` computes for the
answers on screen. Block and action ids come from `handlers.ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk.models.blocks import (
    Block,
    CheckboxesElement,
    ContextBlock,
    DividerBlock,
    InputBlock,
    Option,
    PlainTextInputElement,
    RadioButtonsElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from actions.base import Check, RollbackPoint
from bot.domain.decision import SEVERITY_TABLE, Answers, Decision, Severity, agrees, asked, question
from handlers import text as t
from handlers.ids import QUESTION_BLOCKS, Action, Callback, ModalMeta
from handlers.ids import Block as BlockId

PERSON_CHECKS = (
    ("notified", "Stakeholders notified of the planned rollback"),
    ("reviewed", "Rollback point reviewed with the team"),
)
RECOMMENDATION_ICONS = {
    "immediate_rollback": ":red_circle:",
    "rollback_recommended": ":large_orange_circle:",
    "fix_forward": ":large_green_circle:",
    "monitor_and_fix_forward": ":large_blue_circle:",
}
YES, NO = "yes", "no"
LEAVE_MAINTENANCE_ON = "leave_maintenance_on"


@dataclass(frozen=True)
class CustomerNotice:
    """What customers would be told and where, the policy's severities, the form's choice."""

    to: str
    """Where, in words: `status page status.example.com and e-mail to customers@…`."""
    severities: tuple[str, ...]
    choice: str = "policy"
    preview: tuple[str, ...] = ()
    """The exact texts customers would be sent, shown before anyone decides."""


@dataclass(frozen=True)
class ModalContent:
    """Everything the modal shows."""

    meta: ModalMeta
    target_line: str
    points: list[RollbackPoint]
    selected: str | None
    checks: list[Check]
    decision: Decision
    answers: Answers = field(default_factory=Answers)
    severity: Severity | None = None
    summary: str = ""
    ticked: frozenset[str] = frozenset()
    options: frozenset[str] = frozenset()
    break_glass_allowed: bool = False
    force_allowed: bool = False
    maintenance: bool = False
    customers: CustomerNotice | None = None
    """The environment e-mails customers: ask whether to, the config's policy as default."""
    """The environment has maintenance mode: offer to leave it on if the rollback fails."""
    automatic_steps: list[str] = field(default_factory=list)
    problem: str | None = None
    fixable_help: str = ""
    """Help under "can the issue be fixed quickly?": how long the target's last drill took."""
    point_note: str = ""
    """What the bot remembers about the target's versions (last known healthy), for people."""


def _option(value: str, label: str) -> Option:
    return Option(value=value, text=t.cut(label, t.LABEL_LIMIT))


def rollback_modal(content: ModalContent) -> View:
    """The whole modal."""
    meta = content.meta
    blocks: list[Block] = [
        SectionBlock(
            text=t.md(
                f"*{t.esc(meta.target)}* in *{t.esc(meta.environment)}*: "
                f"{t.esc(content.target_line)}"
            )
        ),
    ]
    if content.problem:
        blocks.append(SectionBlock(text=t.md(f":warning: {t.esc(content.problem)}")))
    if content.points:
        blocks.append(_point_input(content))
        if content.point_note:
            blocks.append(
                ContextBlock(elements=[t.md(f":information_source: {t.esc(content.point_note)}")])
            )
    blocks += [DividerBlock(), _severity_input(content)]
    blocks += _question_inputs(content)
    blocks.append(recommendation_block(content.decision, content.severity))
    blocks += [DividerBlock(), *_checklist(content)]
    blocks.append(
        InputBlock(
            block_id=BlockId.SUMMARY,
            label="What is happening? (user impact)",
            optional=True,
            element=PlainTextInputElement(
                action_id=Action.SUMMARY,
                multiline=True,
                max_length=2000,
                initial_value=content.summary or None,
            ),
        )
    )
    if content.customers is not None:
        blocks.append(_notify_input(content.customers, content.severity))
        if content.customers.preview:
            blocks.append(
                t.context(
                    *(f"Customers would see: {t.esc(line)}" for line in content.customers.preview)
                )
            )
    blocks += _option_inputs(content)
    return View(
        type="modal",
        callback_id=Callback.ROLLBACK_MODAL,
        title="Roll back",
        submit="Request rollback",
        close="Cancel",
        private_metadata=meta.dump(),
        blocks=blocks[: t.MODAL_BLOCKS],
    )


def _point_input(content: ModalContent) -> InputBlock:
    options = [
        _option(
            p.ref,
            f"{p.label}{' (current)' if p.is_current and 'current' not in p.label else ''}",
        )
        for p in content.points[:100]
    ]
    initial = next((o for o in options if o.value == content.selected), None)
    return InputBlock(
        block_id=BlockId.POINT,
        label="Roll back to",
        element=StaticSelectElement(
            action_id=Action.POINT,
            options=options,
            initial_option=initial,
            placeholder="Choose a rollback point",
        ),
        dispatch_action=True,
    )


def _severity_input(content: ModalContent) -> InputBlock:
    options = [
        _option(s.value, f"{s.value.capitalize()} — {row.response_time}: {row.description}")
        for s, row in SEVERITY_TABLE.items()
    ]
    initial = next((o for o in options if o.value == content.severity), None)
    return InputBlock(
        block_id=BlockId.SEVERITY,
        label="Severity",
        element=RadioButtonsElement(
            action_id=Action.SEVERITY, options=options, initial_option=initial
        ),
        dispatch_action=True,
    )


def _question_inputs(content: ModalContent) -> list[Block]:
    blocks: list[Block] = []
    for name, (block_id, action_id) in QUESTION_BLOCKS.items():
        value = getattr(content.answers, name)
        options = [_option(YES, "Yes"), _option(NO, "No")]
        initial = None if value is None else options[0 if value else 1]
        hint = content.fixable_help if name == "fixable_quickly" else ""
        blocks.append(
            InputBlock(
                block_id=block_id,
                label=question(name),
                hint=t.cut(hint, 2000) or None,
                optional=name not in asked(content.answers),  # off the flowchart's path
                element=RadioButtonsElement(
                    action_id=action_id, options=options, initial_option=initial
                ),
                dispatch_action=True,
            )
        )
    return blocks


def recommendation_block(decision: Decision, severity: Severity | None) -> SectionBlock:
    """The live recommendation and the severity's response time."""
    if decision.recommendation is None:
        text = f":grey_question: *Recommendation pending.* {decision.reason}"
    else:
        icon = RECOMMENDATION_ICONS[decision.recommendation.value]
        # escaped: with a verdict the reason quotes what target systems said
        text = f"{icon} *{decision.recommendation.label}.* {t.esc(decision.reason)}"
    if severity is not None:
        row = SEVERITY_TABLE[severity]
        respond = (
            "respond immediately"
            if row.response_time.lower() == "immediate"
            else f"respond within {row.response_time.lower()}"
        )
        text += f"\n*{severity.value.capitalize()}*: {respond}"
        if decision.recommendation is None or agrees(severity, decision.recommendation):
            text += f"; the table says: {row.decision.lower()}."
        else:
            text += (
                f".\n:warning: {severity.value.capitalize()} usually means "
                f"{row.decision.lower()}, but the answers say "
                f"{decision.recommendation.label.lower()}: check the severity or the answers."
            )
    return SectionBlock(block_id=BlockId.RECOMMENDATION, text=t.md(text))


def _checklist(content: ModalContent) -> list[Block]:
    lines = [
        f"{':white_check_mark:' if c.ok else ':x:'} {t.esc(c.name)}"
        f"{f' — {t.esc(c.detail)}' if c.detail else ''}"
        for c in content.checks
    ]
    lines += [f":robot_face: {t.esc(step)}" for step in content.automatic_steps]
    blocks: list[Block] = [
        SectionBlock(text=t.md("*Pre-rollback checklist*")),
        ContextBlock(elements=[t.md("\n".join(lines) or "no automatic checks")]),
    ]
    options = [_option(key, label) for key, label in PERSON_CHECKS]
    initial = [o for o in options if o.value in content.ticked] or None
    blocks.append(
        InputBlock(
            block_id=BlockId.PERSON_CHECKS,
            label="Checked by you",
            optional=True,
            element=CheckboxesElement(
                action_id=Action.PERSON_CHECKS, options=options, initial_options=initial
            ),
        )
    )
    return blocks


def _notify_input(notice: CustomerNotice, severity: Severity | None) -> InputBlock:
    """Notify customers? Default as the config's policy says for the severity."""
    policy = ", ".join(s.capitalize() for s in notice.severities) or "no severity"
    if severity is None:
        default = f"As the policy says for the severity (yes for {policy})"
    else:
        said = "yes" if severity.value in notice.severities else "no"
        default = f"As the policy says for {severity.value.capitalize()}: {said}"
    options = [
        _option("policy", default),
        _option("yes", "Yes, tell customers"),
        _option("no", "No, not this time"),
    ]
    initial = next((o for o in options if o.value == notice.choice), options[0])
    return InputBlock(
        block_id=BlockId.NOTIFY,
        label=t.cut(f"Notify customers? ({notice.to})", t.LABEL_LIMIT + 70),
        optional=True,
        element=RadioButtonsElement(
            action_id=Action.NOTIFY, options=options, initial_option=initial
        ),
    )


def _option_inputs(content: ModalContent) -> list[Block]:
    options = []
    if content.force_allowed:
        options.append(
            _option("force", "Force: switch despite failing health gates or a stopped container")
        )
    if content.break_glass_allowed:
        options.append(_option("break_glass", "Break-glass: run without a second approver"))
    if content.maintenance:
        options.append(_option(LEAVE_MAINTENANCE_ON, "Leave maintenance on if the rollback fails"))
    if not options:
        return []
    initial = [o for o in options if o.value in content.options] or None
    blocks: list[Block] = [
        InputBlock(
            block_id=BlockId.OPTIONS,
            label="Options",
            optional=True,
            element=CheckboxesElement(
                action_id=Action.OPTIONS, options=options, initial_options=initial
            ),
        )
    ]
    if content.break_glass_allowed:
        blocks.append(
            InputBlock(
                block_id=BlockId.CONFIRM,
                label="For break-glass, type EMERGENCY",
                optional=True,
                element=PlainTextInputElement(action_id=Action.CONFIRM, max_length=20),
            )
        )
    return blocks


def message_view(meta: ModalMeta | None, title: str, body: str) -> View:
    """A modal that only says something (Loading…, Creating incident…, an error)."""
    return View(
        type="modal",
        callback_id=Callback.ROLLBACK_MODAL,
        title=t.cut(title, 24),
        close="Close",
        private_metadata=meta.dump() if meta else "",
        blocks=[SectionBlock(text=t.md(body))],
    )
