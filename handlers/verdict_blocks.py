"""The reversibility verdict in the plan message: one line per target, its evidence below.

Words for people, every piece of text from a target system escaped
(handlers.text). A blocked verdict says that Approve is disabled and that
break-glass can still override it (recorded).
"""

from __future__ import annotations

from slack_sdk.models.blocks import Block, ContextBlock, SectionBlock

from actions.base import Level
from bot.domain.records import RunRecord
from bot.domain.verdict import Verdict
from handlers import text as t
from handlers.drill_blocks import finding_text

ICONS = {
    Level.OK: ":large_green_circle:",
    Level.LOSS: ":large_yellow_circle:",
    Level.RISKY: ":large_orange_circle:",
    Level.BLOCKED: ":red_circle:",
}
MARKS = {Level.OK: "✓", Level.LOSS: "≈", Level.RISKY: "!", Level.BLOCKED: "✗"}
EVIDENCE_LINES = 12
BLOCKED_TEXT = (
    ":no_entry: *Approve is disabled:* a verdict is blocked. Fix what blocks it and re-plan; "
    "break-glass can still override, and the override is recorded."
)


def verdict_lines(verdict: Verdict) -> tuple[str, str]:
    """(headline, evidence) for one target, escaped."""
    headline = (
        f"{ICONS[verdict.level]} *{t.esc(verdict.target)}*: {t.dated(t.esc(verdict.headline))}"
    )
    ordered = sorted(verdict.evidence, key=lambda f: -list(Level).index(f.level))
    lines = [f"{MARKS[f.level]} {t.dated(finding_text(f))}" for f in ordered[:EVIDENCE_LINES]]
    if len(ordered) > EVIDENCE_LINES:
        lines.append(f"… and {len(ordered) - EVIDENCE_LINES} more")
    return headline, "\n".join(lines)


def verdict_blocks(run: RunRecord) -> list[Block]:
    """The verdict section of the plan message (nothing for runs planned before verdicts)."""
    verdicts = run.verdicts or ()
    if not verdicts:
        return []
    blocks: list[Block] = [SectionBlock(text=t.md("*Reversibility verdict*"))]
    for verdict in verdicts:
        headline, evidence = verdict_lines(verdict)
        blocks.append(SectionBlock(text=t.md(headline)))
        if evidence:
            blocks.append(ContextBlock(elements=[t.md(evidence)]))
    if run.state == "requested" and is_blocked(run):
        blocks.append(SectionBlock(text=t.md(BLOCKED_TEXT)))
    return blocks


def is_blocked(run: RunRecord) -> bool:
    """Whether a stored verdict of the run blocks Approve."""
    return any(v.level == Level.BLOCKED for v in run.verdicts or ())


def risk_summary(run: RunRecord) -> str:
    """The verdict in one line for where people decide (the card, the Approve dialog):
    `risky: app: migration 002 drops a column …; data-loss window …`, or 'safe'."""
    verdicts = run.verdicts or ()
    if not verdicts:
        return ""
    worst = max((v.level for v in verdicts), key=list(Level).index)
    if worst == Level.OK:
        return "verdict: safe"
    said = "; ".join(f"{v.target} {v.headline}" for v in verdicts if v.level != Level.OK)
    return f"verdict: {said}"
