"""Pure builders for the App Home tab: one small builder per section, composed in order.

The tab is `home_view_blocks(content)`: each builder in `SECTIONS` takes the same
`HomeContent` and returns its blocks (a header, its lines, a divider). A new
section (drills, say) is a field on `HomeContent`, filled in `handlers/home.py`,
and one more builder in `SECTIONS`; no other builder changes. Slack allows 100
blocks in a home view; each section stays within a few.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.application.drills import DrillStatus
from bot.application.timeline import duration
from bot.domain.records import ReviewRecord, RunRecord
from bot.domain.recovery import Recovery as PhaseTimes
from bot.domain.versions import VersionMark, short
from handlers import drill_blocks
from handlers import text as t
from handlers.command_blocks import lines_message, run_line
from handlers.ids import Action
from handlers.review_blocks import review_line

LIST_LIMIT = 15
"""At most this many lines per section; the rest is counted, `/rollback status` has all."""


@dataclass(frozen=True)
class Recovery:
    """One finished rollback of a target and how long production took to recover."""

    run: RunRecord
    took: timedelta | None
    """From approval (or start) to verified healthy; None when it did not recover."""
    link: str | None = None


@dataclass(frozen=True)
class TargetHistory:
    """A target's recent rollbacks."""

    environment: str
    target: str
    recoveries: list[Recovery] = field(default_factory=list)


@dataclass(frozen=True)
class HomeContent:
    """Everything the home tab shows one person."""

    viewer: str
    active: list[tuple[RunRecord, str | None, list[tuple[str, datetime]]]] = field(
        default_factory=list
    )
    waiting: list[tuple[RunRecord, str | None]] = field(default_factory=list)
    """Requested runs this viewer may approve (an approver, not the requester, not yet)."""
    reviews: list[tuple[ReviewRecord, str | None]] = field(default_factory=list)
    history: list[TargetHistory] = field(default_factory=list)
    drills: list[DrillStatus] = field(default_factory=list)
    """Each drillable target's last drill (flagged when never drilled or overdue)."""
    incidents: list[PhaseTimes] = field(default_factory=list)
    """The newest incidents' recovery phases (detect, decide, approve, recover)."""
    disarmed: list[RunRecord] = field(default_factory=list)
    """Automatic rollbacks that disarmed automatic rollback of their target until re-armed."""
    bad_versions: list[VersionMark] = field(default_factory=list)
    """Versions rolled away from and not cleared: the regression guard answers `bad`."""


Section = Callable[[HomeContent], list[Block]]


def _thread(link: str | None) -> str:
    return f" · <{link}|open thread>" if link else ""


def _titled(
    title: str, lines: list[str], empty: str, *, more: str = "`/rollback status`"
) -> list[Block]:
    """A header, the lines (cut at LIST_LIMIT, the rest counted) and a divider."""
    shown = lines[:LIST_LIMIT]
    if len(lines) > LIST_LIMIT:
        shown.append(f"…and {len(lines) - LIST_LIMIT} more: {more}")
    body = lines_message(title, shown)[1:] if shown else []
    if not shown:
        body = [ContextBlock(elements=[MarkdownTextObject(text=empty)])]
    return [HeaderBlock(text=t.cut(title, t.HEADER_LIMIT)), *body, DividerBlock()]


def active_section(content: HomeContent) -> list[Block]:
    """Incidents whose rollback waits, is approved or runs."""
    lines = [
        f"{run_line(run, approvals)}{_thread(link)}" for run, link, approvals in content.active
    ]
    return _titled(
        "Active incidents", lines, "No rollback is waiting, running, or failed and unresolved."
    )


def disarmed_section(content: HomeContent) -> list[Block]:
    """Targets whose automatic rollback monitoring used and a person has not re-armed."""
    if not content.disarmed:
        return []
    blocks: list[Block] = [HeaderBlock(text="Automatic rollback disarmed")]
    for run in content.disarmed[:LIST_LIMIT]:
        said = (
            f":no_entry_sign: *{t.esc(run.target)}* in {t.esc(run.environment)}: monitoring "
            f"rolled it back itself in *{run.incident_id}* at {t.when(run.approved_at)}, so it "
            "will not again until an approver re-arms it (no rollback loops)."
        )
        blocks.append(
            SectionBlock(
                text=t.md(said),
                accessory=ButtonElement(
                    text="Re-arm", action_id=Action.REARM, value=run.id, style="primary"
                ),
            )
        )
    blocks.append(DividerBlock())
    return blocks


def _bad_line(mark: VersionMark) -> str:
    incident = mark.incident_id or "an earlier incident"
    typed = f"{mark.target} {mark.environment} {mark.version.replace(', ', ',')}"
    return (
        f":no_entry: `{t.esc(short(mark.version))}` of *{t.esc(mark.target)}* in "
        f"{t.esc(mark.environment)}: rolled back from in *{t.esc(incident)}* {t.when(mark.at)}; "
        f"an approver clears it with `/rollback clear {t.esc(typed)} &lt;reason&gt;`"
    )


def bad_versions_section(content: HomeContent) -> list[Block]:
    """Versions marked bad after a rollback, each with the command that clears it."""
    if not content.bad_versions:
        return []
    lines = [_bad_line(m) for m in content.bad_versions]
    more = "the guard API, `GET /v1/targets/<env>/<target>/versions/<version>`"
    return _titled("Versions kept out (the regression guard)", lines, "", more=more)


def waiting_section(content: HomeContent) -> list[Block]:
    """Rollbacks waiting for this viewer's approval."""
    lines = [
        f":hourglass: *{run.incident_id}* {t.esc(run.target)}/{t.esc(run.environment)} · "
        f"requested by {t.user(run.requester)} · expires {t.when(run.expires_at)}{_thread(link)}"
        for run, link in content.waiting
    ]
    return _titled("Waiting for your approval", lines, "Nothing waits for your approval.")


def reviews_section(content: HomeContent) -> list[Block]:
    """Break-glass rollbacks whose mandatory review is not done, the viewer's own first."""
    mine = [(r, link) for r, link in content.reviews if r.reviewer == content.viewer]
    others = [(r, link) for r, link in content.reviews if r.reviewer != content.viewer]
    lines = [f"*Yours:* {review_line(r, link=link)}" for r, link in mine]
    lines += [review_line(r, link=link) for r, link in others]
    return _titled("Break-glass rollbacks awaiting review", lines, "Every break-glass is reviewed.")


def _recovery(item: Recovery) -> str:
    run = item.run
    if item.took is not None:
        said = f"recovered in {duration(item.took)}"
    elif run.state == "failed":
        said = "failed, not recovered"
    else:
        said = f"{run.state}, no healthy check recorded"
    at = t.when(run.finished_at or run.created_at)
    return f"{at} *{run.incident_id}* {said}{_thread(item.link)}"


def history_section(content: HomeContent) -> list[Block]:
    """Each target's recent rollbacks with their time to recover."""
    lines = []
    for history in content.history:
        name = f"*{t.esc(history.target)}* in {t.esc(history.environment)}"
        if not history.recoveries:
            lines.append(f"{name}: no rollbacks yet")
            continue
        lines.append(f"{name}:\n" + "\n".join(f"    {_recovery(r)}" for r in history.recoveries))
    return _titled(
        "Recent rollbacks and time to recover",
        lines,
        "No targets configured.",
        more="`/rollback history <target> <env>`",
    )


def drills_section(content: HomeContent) -> list[Block]:
    """Each target's drill standing and the newest incidents' recovery times."""
    return drill_blocks.home_section(content.drills, content.incidents)


SECTIONS: tuple[Section, ...] = (
    active_section,
    disarmed_section,
    waiting_section,
    reviews_section,
    history_section,
    bad_versions_section,
    drills_section,
)


def home_view_blocks(content: HomeContent, sections: tuple[Section, ...] = SECTIONS) -> list[Block]:
    """The whole home tab: each section's blocks in order, within Slack's 100."""
    blocks: list[Block] = []
    for section in sections:
        blocks += section(content)
    return blocks[: t.MODAL_BLOCKS]
