"""Pure builders for the incident thread: domain objects in, slack_sdk models out.

One builder per message a person sees: the incident card, the plan with its
Approve / Reject / Cancel buttons, the progress message, a step's output and the
post-rollback checklist. The end of a run is announced by `handlers.announce_blocks`;
the replies to /rollback status, history and help are `handlers.command_blocks`.
No I/O here; the handlers fetch, these render.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    HeaderBlock,
    Option,
    SectionBlock,
)

from actions.base import readable
from bot.application.timeline import from_to, outcome_now
from bot.application.verification import VerifyItem
from bot.config import Approvers
from bot.domain.aftermath import Aftermath
from bot.domain.decision import Recommendation
from bot.domain.records import IncidentRecord, RunRecord, StepView
from bot.domain.states import RunKind
from bot.execution.drill_plans import is_drill
from handlers import text as t
from handlers.ids import Action
from handlers.ids import Block as BlockId
from handlers.verdict_blocks import is_blocked, risk_summary, verdict_blocks

STATE_ICONS = {
    "pending": ":white_large_square:",
    "running": ":hourglass_flowing_sand:",
    "succeeded": ":white_check_mark:",
    "skipped": ":fast_forward:",
    "failed": ":x:",
    "not run": ":no_entry_sign:",
}
RUN_TITLES = {
    "requested": ":hourglass: Awaiting approval",
    "approved": ":white_check_mark: Approved, starting",
    "running": ":arrows_counterclockwise: Rolling back",
    "succeeded": ":large_green_circle: Rolled back",
    "failed": ":red_circle: Failed: manual intervention required",
    "rejected": ":no_entry: Rejected",
    "cancelled": ":heavy_minus_sign: Cancelled",
    "expired": ":alarm_clock: Approval expired",
}


@dataclass(frozen=True)
class RunFacts:
    """What the card and plan message say about a run's people."""

    approvals: list[tuple[str, datetime]]
    rejected_by: str | None = None
    cancelled_by: str | None = None
    auto_approved_at: datetime | None = None
    approvers: Approvers | None = None
    """Who may approve (config), to say who still can."""
    after: Aftermath | None = None
    """What people decided since the run failed (`bot.domain.aftermath`)."""


def approval_state(
    run: RunRecord,
    approvals: list[tuple[str, datetime]],
    *,
    approvers: Approvers | None = None,
) -> str:
    """`1 of 2 approvals (@dba) · may still approve: @bob @ops · expires <date token>`.

    The deadline is a date token only: a message stays on screen for hours, and a count of
    minutes left written into it would be false a minute later.
    """
    need = run.approvals_required
    said = f"{len(approvals)} of {need} approval{'' if need == 1 else 's'}"
    if approvals:
        said += f" ({', '.join(t.user(u) for u, _ in approvals)})"
    if run.state != "requested":
        return said
    if approvers is not None:
        done = {u for u, _ in approvals} | {run.requester}
        still = [t.user(u) for u in approvers.users if u not in done]
        still += [t.group(g) for g in approvers.groups]
        said += f" · may still approve: {' '.join(still) or 'nobody (check the config)'}"
    said += f" · expires {t.when(run.expires_at)}"
    return said


def run_title(run: RunRecord, after: Aftermath | None = None) -> str:
    """The run's state in words: a failure a person marked resolved says who and when."""
    if run.state == "failed" and after is not None and after.resolved_by:
        return (
            f":white_check_mark: Failed, resolved by {t.user(after.resolved_by)} at "
            f"{t.when(after.resolved_at)}"
        )
    return RUN_TITLES[run.state]


def _status_line(run: RunRecord, facts: RunFacts) -> str:
    line = run_title(run, facts.after)
    if facts.approvals or run.state == "requested":
        line += " · " + approval_state(run, facts.approvals, approvers=facts.approvers)
    if facts.approvals and run.state != "requested":
        who = ", ".join(f"{t.user(u)} at {t.when(at)}" for u, at in facts.approvals)
        line += f" · Approved by {who}"
    if facts.auto_approved_at is not None:
        line += f" · Approved by monitoring at {t.when(facts.auto_approved_at)} (veto window ended)"
    if run.break_glass:
        line += " · :rotating_light: break-glass, mandatory review"
    if run.state == "rejected" and facts.rejected_by:
        line += f" by {t.user(facts.rejected_by)}"
    if run.state == "cancelled" and facts.cancelled_by:
        line += f" by {t.user(facts.cancelled_by)}"
    return line


def incident_card(incident: IncidentRecord, run: RunRecord | None, facts: RunFacts) -> list[Block]:
    """The parent message of the incident thread."""
    recommendation = (
        Recommendation(incident.recommendation).label if incident.recommendation else "—"
    )
    drill = run is not None and run.kind == RunKind.DRILL
    blocks: list[Block] = [
        HeaderBlock(
            text=t.cut(
                (f"Drill {incident.id} · " if drill else f"{incident.id} · ")
                + ("rehearsal, no incident · " if drill else f"{incident.severity.capitalize()} · ")
                + f"{incident.target} in {incident.environment}",  # header: plain text
                t.HEADER_LIMIT,
            )
        ),
        t.section(
            f"*Opened by* {t.user(incident.opened_by)} · *Recommendation:* {recommendation}\n"
            f"{t.dated(t.esc(incident.reason))}"
        ),
    ]
    if incident.summary:
        blocks.append(t.section(f"*Impact:* {t.esc(incident.summary)}"))
    if run is not None:
        blocks.append(t.section(f"*Rollback:* {versions(run)}"))
        blocks.append(t.section(f"*Status:* {_status_line(run, facts)}"))
        risk = risk_summary(run)
        if risk and run.state in ("requested", "approved", "running"):
            blocks.append(t.context(f"*Before approval:* {t.dated(t.esc(risk))}"))
        if run.outcome:
            blocks.append(t.context(outcome_words(run, facts.after)))
    return blocks


def card_text(incident: IncidentRecord, run: RunRecord | None) -> str:
    """Notification text of the card."""
    state = run.state if run else "open"
    return t.esc(
        f"{incident.id}: rollback of {incident.target} in {incident.environment} ({state})"
    )


def label(step: dict[str, Any]) -> str:
    """A stored step's words for people, escaped (older runs: from its name)."""
    return t.esc(step.get("label") or readable(str(step["name"])))


def versions(run: RunRecord) -> str:
    """`*app* from rev 4 (v1.2.4) to rev 3 (v1.2.3)`, escaped, times as date tokens."""
    return f"*{t.esc(run.target)}* {t.dated(t.esc(from_to(run)))}"


def outcome_words(run: RunRecord, after: Aftermath | None = None) -> str:
    """The run's outcome as it stands now (`outcome_now`), escaped, times as date tokens."""
    return t.dated(t.esc(outcome_now(run, after)))


PHASE_WORDS = {
    "stage": "before maintenance, nothing live touched",
    "keep": "after maintenance, the site up",
}
"""Phases shown in words other than their name (`actions.base.TargetPlan`)."""


def _plan_lines(plan: list[dict[str, Any]]) -> list[str]:
    lines = []
    for step in plan:
        flag = " _(always runs)_" if step["always"] else ""
        phase = PHASE_WORDS.get(step["phase"], step["phase"])
        limit = f" · up to {duration(float(step['timeout']))}" if step.get("timeout") else ""
        lines.append(f"{step['position'] + 1}. {label(step)} · _{t.esc(phase)}_{limit}{flag}")
    return lines


def duration(seconds: float) -> str:
    """`45 s`, `5 min`, `1 h 30 min`: a step's time limit as the plan shows it."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def _details(plan: list[dict[str, Any]]) -> list[Block]:
    """Each step's exact request or command, credentials masked, in small print."""
    lines = [
        f"{s['position'] + 1}. {t.esc(t.mask_urls(str(s['description'])))}"
        for s in plan
        if s.get("description")
    ]
    elements: list[str] = []
    for line in lines:
        line = t.cut(line, t.SECTION_LIMIT - 20)
        if elements and len(elements[-1]) + len(line) + 1 <= t.SECTION_LIMIT - 20:
            elements[-1] += "\n" + line
        else:
            elements.append(line)
    if not elements:
        return []
    return [t.context(*[f"*Step details*\n{elements[0]}", *elements[1:]])]


def mention_approvers(approvers: Approvers, *, requester: str) -> str:
    """Mention the configured approvers and groups, except the requester."""
    users = [t.user(u) for u in approvers.users if u != requester]
    return " ".join(users + [t.group(g) for g in approvers.groups])


def plan_title(run: RunRecord) -> str:
    """What the plan is: a rollback's, or a drill's (which rolls back and forward again)."""
    return "Rollback drill plan" if is_drill(run) else "Rollback plan"


def plan_text(run: RunRecord, state: str) -> str:
    """The plan message's notification text, escaped: its title, target and `state`."""
    return t.esc(f"{plan_title(run)} for {run.target} in {run.environment}: {state}")


def plan_message(run: RunRecord, facts: RunFacts, *, approvers: Approvers) -> list[Block]:
    """The exact plan, with Approve / Reject / Cancel while it waits for approval."""
    blocks: list[Block] = [
        t.section(f"*{plan_title(run)}* in *{t.esc(run.environment)}*: {versions(run)}"),
        *t.sections(_plan_lines(run.plan)),
        *_details(run.plan),
    ]
    notes = run.notes or []
    if notes:
        blocks.append(t.section("*Notes*\n" + "\n".join(f"• {t.dated(t.esc(n))}" for n in notes)))
    blocks += verdict_blocks(run)
    if run.force:
        blocks.append(t.context(":warning: forced: missing rollback scripts overridden"))
    blocks.append(
        t.context(
            f"{approval_state(run, facts.approvals, approvers=approvers)}"
            f" · requested by {t.user(run.requester)} · plan `{run.plan_hash[:12]}`"
        )
    )
    if run.state == "requested":
        blocks.append(
            t.section(f"Approvers: {mention_approvers(approvers, requester=run.requester)}")
        )
        if run.auto_approve_at is not None:
            when = t.when(run.auto_approve_at)
            blocks.append(
                t.section(
                    f":rotating_light: *Monitoring rolls back automatically at {when}* "
                    "unless an approver rejects or cancels it before then."
                )
            )
        if run.plan_stale_at is not None:
            blocks.append(t.section(STALE_TEXT))
            blocks.append(replan_buttons(run))
        else:
            blocks.append(approval_buttons(run, approvable=not is_blocked(run)))
    else:
        blocks.append(t.section(f"*Status:* {_status_line(run, facts)}"))
    return blocks


STALE_TEXT = (
    ":warning: *This plan is out of date:* the target changed since it was requested (a newer "
    "revision or backup appeared), so it can no longer be approved. *Re-plan* to request it "
    "again with the same answers."
)


def replan_buttons(run: RunRecord) -> ActionsBlock:
    """Re-plan and Cancel, for a plan that went out of date."""
    return ActionsBlock(
        block_id=BlockId.APPROVAL,
        elements=[
            ButtonElement(text="Re-plan", action_id=Action.REPLAN, value=run.id, style="primary"),
            ButtonElement(text="Cancel", action_id=Action.CANCEL, value=run.id),
        ],
    )


def stale_message(run: RunRecord, *, people: list[str]) -> list[Block]:
    """The thread reply that tells everyone the plan is out of date."""
    mentions = " ".join(dict.fromkeys(t.user(p) for p in people if p))
    return [t.section(f"{STALE_TEXT} {mentions}"), replan_buttons(run)]


def approval_buttons(run: RunRecord, *, approvable: bool = True) -> ActionsBlock:
    """Approve (with a confirm dialog), Reject and Cancel; no Approve on a blocked verdict."""
    risk = risk_summary(run)
    confirm = t.confirm(
        "Approve this rollback?",
        t.dated(
            t.esc(
                f"Roll back {run.target} in {run.environment} {from_to(run)}: "
                f"{len(run.plan)} steps, starting now." + (f" {t.sentence(risk)}" if risk else "")
            ),
            tokens=False,
        ),
        yes="Approve and run",
    )
    approve = ButtonElement(
        text="Approve", action_id=Action.APPROVE, value=run.id, style="primary", confirm=confirm
    )
    return ActionsBlock(
        block_id=BlockId.APPROVAL,
        elements=[
            *([approve] if approvable else []),
            ButtonElement(text="Reject", action_id=Action.REJECT, value=run.id, style="danger"),
            ButtonElement(text="Cancel", action_id=Action.CANCEL, value=run.id),
        ],
    )


def _live_line(step: dict[str, Any], live: dict[str, Any]) -> str:
    """`62 s of 300 s · 12 readings · health: 503` for a running step."""
    timeout = step.get("timeout")
    limit = f" of {float(timeout):.0f} s" if timeout else ""
    readings = int(live.get("readings") or 0)
    count = f" · {readings} reading{'' if readings == 1 else 's'}" if readings else ""
    line = t.dated(t.esc(t.mask_urls(str(live.get("line") or ""))))
    return f"\n      _{float(live.get('elapsed') or 0):.0f} s{limit}{count} · {line}_"


def progress_message(
    run: RunRecord,
    records: list[StepView],
    *,
    live: dict[str, Any] | None = None,
    after: Aftermath | None = None,
) -> list[Block]:
    """One line per step: icon, name, state, duration; edited in place as steps run.

    `live` is a running step's latest reading (`SlackProgress`), shown under its line;
    `after`, what people decided since a failure.
    """
    by_position = {r.position: r for r in records}
    finished = run.state in ("succeeded", "failed")
    lines = []
    for step in run.plan:
        record = by_position.get(step["position"])
        state = record.state if record else ("not run" if finished else "pending")
        took = t.seconds(record.started_at, record.finished_at) if record else ""
        summary = (
            f" — {t.dated(t.esc(t.mask_urls(record.summary)))}" if record and record.summary else ""
        )
        now = ""
        if live and state == "running" and live.get("position") == step["position"]:
            now = _live_line(step, live)
        lines.append(
            f"{STATE_ICONS.get(state, '')} {step['position'] + 1}. *{label(step)}* "
            f"{state}{f' ({took})' if took else ''}{summary}{now}"
        )
    done = sum(1 for r in records if r.state in ("succeeded", "skipped"))
    blocks: list[Block] = [
        t.section(
            f"*Progress* · {run_title(run, after)} · {versions(run)} · {done}/{len(run.plan)} steps"
        ),
        t.section("\n".join(lines)),
    ]
    if run.state == "failed":
        resolved = after is not None and after.resolved_by
        blocks.append(
            t.section(  # the runner's outcome says it too: once is enough
                ("" if resolved else ":rotating_light: *Manual intervention required.* ")
                + outcome_words(run, after).replace(" Manual intervention required.", "")
            )
        )
    return blocks


def step_output(step: dict[str, Any], record: StepView) -> tuple[list[Block], bool]:
    """A step's output as a thread reply; True when it was cut and needs a file."""
    header = f"{STATE_ICONS.get(record.state, '')} *{step['position'] + 1}. {label(step)}*"
    body = t.esc(t.mask_urls(record.output or record.summary))
    rendered, was_cut = t.code(body, t.SECTION_LIMIT - 100)
    return [t.section(header), t.section(rendered)], was_cut


def checklist_message(run: RunRecord, items: list[VerifyItem]) -> list[Block]:
    """The procedures' verification checklist: the bot's ticks with evidence, boxes for people."""
    auto = [i for i in items if i.automatic]
    people = [i for i in items if not i.automatic]
    blocks: list[Block] = [t.section("*Post-rollback verification*")]
    for item in auto:
        icon = ":white_check_mark:" if item.ok else ":x:"
        blocks.append(t.section(f"{icon} {t.esc(item.label)}\n_{t.esc(item.evidence)}_"))
    if people:
        options = [Option(value=i.key, text=t.cut(i.label, t.LABEL_LIMIT)) for i in people]
        ticked = [o for o, i in zip(options, people, strict=True) if i.ticked_by]
        box = CheckboxesElement(
            action_id=Action.VERIFY, options=options, initial_options=ticked or None
        )
        blocks.append(
            SectionBlock(block_id=BlockId.VERIFY, text=t.md("*For people to check*"), accessory=box)
        )
        done = [
            f"{t.esc(i.label.split(':')[0])} ✔ {t.user(i.ticked_by)}" for i in people if i.ticked_by
        ]
        if done:
            blocks.append(t.context(*done))
    return blocks
