"""Pure builders for drills and recovery times: `/rollback drills`, the App Home section.

A target never drilled, or drilled longer ago than its environment's
`drill_every`, is flagged with :warning: wherever its drill standing shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    HeaderBlock,
)

from actions.base import Finding
from actions.database import human_size
from bot.application.drill_schedule import RETRY
from bot.application.drills import DrillStatus, Measured
from bot.domain.records import RunRecord
from bot.domain.recovery import Recovery, spoken
from bot.execution.drill_evidence import drilled_at, is_drill_finding
from bot.execution.drill_plans import CLEANUP, PITR
from handlers import text as t

FLAG = ":warning:"
FRESH = ":white_check_mark:"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: tuple[float, ...]) -> str:
    """A tiny chart of times, oldest first: one bar each, scaled to the largest."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1)))] for v in values)


def trend_text(status: DrillStatus) -> str:
    """The time to recover over the last drills and real rollbacks: a sparkline each."""
    parts = []
    if len(status.trend) > 1:
        parts.append(
            f"drills {sparkline(status.trend)} {spoken(status.trend[0])} → "
            f"{spoken(status.trend[-1])}"
        )
    if status.rollbacks:
        parts.append(
            f"real rollbacks {sparkline(status.rollbacks)} last {spoken(status.rollbacks[-1])}"
        )
    return "; ".join(parts)


def drill_line(status: DrillStatus) -> str:
    """One target's last drill, its time to recover and age, its trend; flagged when it
    failed, was slower than the RTO, or is due."""
    said = f"{FLAG if status.flags else FRESH} {t.esc(status.line())}"
    flags = [f for f in status.flags if f != "overdue"]  # the line says when it is due
    if flags:
        said += f" · *{', '.join(flags)}*"
    trend = trend_text(status)
    return f"{said}\n      time to recover: {trend}" if trend else said


def drills_message(statuses: list[DrillStatus]) -> list[Block]:
    """`/rollback drills`: each target's last drill, flagged when never or too long ago."""
    blocks: list[Block] = [t.section("*Rollback drills*")]
    if not statuses:
        blocks.append(t.section("No environment allows drills (see `drills_allowed`)."))
        return blocks
    lines = [drill_line(s) for s in statuses]
    due = sum(1 for s in statuses if s.flags)
    blocks += [t.section(text) for text in _chunks(lines)]
    if due:
        blocks.append(
            t.section(
                f"{FLAG} {due} target(s) flagged (failed, slower than the RTO, or due): run "
                "`/rollback drill <target> <env>` to measure how long rolling them back takes."
            )
        )
    return blocks[: t.MESSAGE_BLOCKS]


def measured_text(target: str, measured: Measured) -> str:
    """What a finished drill measured, for its thread: time to recover, forward, each step."""
    if measured.restore_drill:
        lines = [restore_headline(target, measured)]
    else:
        lines = [
            f":test_tube: *Drill measured*: rolling back {t.esc(target)} took "
            f"*{spoken(measured.recover_seconds)}* (first change to the rollback verified); "
            f"rolling forward took {spoken(measured.forward_seconds)}."
        ]
    if len(measured.targets) > 1:
        lines.append(
            "Per target: "
            + ", ".join(f"{t.esc(n)} {spoken(s)}" for n, s in measured.targets.items())
        )
    lines += [
        f"{s['position'] + 1}. {t.esc(s['label'] or s['name'])}: {spoken(s['seconds'])} "
        f"({s['state']})"
        for s in measured.steps
    ]
    return t.cut("\n".join(lines), t.SECTION_LIMIT)


def flagged_text(run: RunRecord, detail: dict[str, Any]) -> str:
    """A scheduled drill flagged: what failed or how far over the RTO it was."""
    reasons = list(detail.get("reasons") or [])
    said = f"{FLAG} *Scheduled drill flagged*: {t.esc(run.target)} in {t.esc(run.environment)}"
    if "failed" in reasons:
        said += " failed (see the failed step above); the rollback it rehearses may fail too"
    if "slower than the RTO" in reasons:
        said += (
            f"{';' if 'failed' in reasons else ''} took {spoken(detail.get('recover_seconds'))} "
            f"to recover, over its RTO of {spoken(detail.get('rto_seconds'))}"
        )
    return said + ". Look at it before the next incident needs it."


def trend_comment(status: DrillStatus) -> str:
    """The words with the trend chart: what it draws, and the sparklines' figures."""
    figures = trend_text(status)
    if not figures and status.trend:
        figures = f"one drill so far, {spoken(status.trend[-1])}"
    if status.rto is not None:
        figures += f"; RTO {spoken(status.rto.total_seconds())} (dashed)"
    return (
        f"Time to recover of {t.esc(status.target)} in {t.esc(status.environment)} over its "
        f"last drills and real rollbacks, oldest first: {figures}"
    )


def _period(seconds: float) -> str:
    """A schedule's period as written: `7 days`, `12 hours`, else spoken."""
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return spoken(seconds)


def overdue_text(detail: dict[str, Any]) -> str:
    """A scheduled target's drills overdue (`drill_schedule.OVERDUE`), for its channel."""
    target, env = t.esc(str(detail.get("target"))), t.esc(str(detail.get("environment")))
    every = _period(float(detail.get("every_seconds") or 0.0))
    recovered = detail.get("recovered_at")
    if recovered:
        since = f"no successful drill since {t.when(datetime.fromisoformat(recovered))}"
    else:
        since = (
            "no successful drill yet (the first was tried "
            f"{t.when(datetime.fromisoformat(str(detail.get('first_at'))))})"
        )
    last = (
        f"the last one {t.esc(str(detail.get('last_state')))} "
        f"{t.when(datetime.fromisoformat(str(detail.get('last_at'))))}"
    )
    return (
        f"{FLAG} *Drill overdue*: {target} in {env} has had {since}, scheduled every {every}; "
        f"{last}. An untested rollback is a second incident waiting: see `/rollback drills`, "
        f"or run `/rollback drill {target} {env}`."
    )


def not_started_text(detail: dict[str, Any]) -> str:
    """A scheduled drill that could not start (`drill_schedule.NOT_STARTED`), for its
    channel: which, its slot, why, and whether the target was ever drilled."""
    target, env = t.esc(str(detail.get("target"))), t.esc(str(detail.get("environment")))
    slot = t.when(datetime.fromisoformat(str(detail.get("slot"))))
    never = (
        " It has never been drilled: nobody knows how long rolling it back takes."
        if detail.get("never_drilled")
        else ""
    )
    return (
        f"{FLAG} *Scheduled drill not started*: {target} in {env}, due {slot}: "
        f"{t.esc(str(detail.get('reason')).rstrip('.'))}.{never} The bot tries again every "
        f"{RETRY.total_seconds() / 60:.0f} min until it starts; see `/rollback drills`, or run "
        f"`/rollback drill {target} {env}` once it is fixed."
    )


def success_line(run: RunRecord, *, took: str, link: str) -> str:
    """The one calm line to the channel when a drill succeeded."""
    within = f" in {took}" if took else ""
    if any(step.get("phase") == CLEANUP for step in run.plan):
        what = "'s newest backup restored into scratch and verified"
        return (
            f":large_green_circle: Drill {run.incident_id}: {t.esc(run.target)}{what}{within}; "
            f"nothing live was touched. <{link}|Thread>"
        )
    return (
        f":large_green_circle: Drill {run.incident_id}: {t.esc(run.target)} went back and "
        f"forward again{within}; production was not in an incident. <{link}|Thread>"
    )


def restore_headline(target: str, measured: Measured) -> str:
    """A restore drill's time to recover, throughput and point-in-time recovery, in words."""
    said = ":test_tube: *Restore drill measured*: "
    if measured.recover_seconds is not None:
        said += (
            f"restoring the newest backup of {t.esc(target)} took "
            f"*{spoken(measured.recover_seconds)}* (restore and verification queries)"
        )
    elif any(s["part"] == "rollback" for s in measured.steps):
        said += f"the newest backup of {t.esc(target)} did *not* restore and verify"
    else:
        said += f"{t.esc(target)} has no dump to restore"
    if measured.bytes_per_second is not None and measured.restored_bytes is not None:
        said += (
            f", {human_size(measured.restored_bytes)} at {human_size(measured.bytes_per_second)}/s"
        )
    pitr = [s for s in measured.steps if s["part"] == PITR]
    if measured.pitr_seconds is not None:
        said += f"; point-in-time recovery took *{spoken(measured.pitr_seconds)}*"
    elif pitr:
        said += "; the point-in-time recovery did *not* complete"
    return said + ". The scratch databases are dropped; nothing live was touched."


def finding_text(finding: Finding) -> str:
    """A verdict's finding for Slack, escaped; a drill finding's time as a date token."""
    said = t.esc(t.mask_urls(finding.text))
    at = drilled_at(finding) if is_drill_finding(finding) else None
    if at is None:
        return said
    return said[: said.rindex("at ")] + t.when(at)


def recovery_line(rec: Recovery) -> str:
    """An incident's time to detect, decide, approve and recover, in one line."""
    said = ", ".join(f"{p.name} {spoken(p.seconds)}" for p in rec.phases)
    return f"{rec.incident_id} · {t.esc(rec.target)} in {t.esc(rec.environment)}: {said}"


def home_section(statuses: list[DrillStatus], recoveries: list[Recovery]) -> list[Block]:
    """The App Home section: drill standing per target, then recent recovery times."""
    blocks: list[Block] = [HeaderBlock(text="Drills and recovery times")]
    if statuses:
        blocks += [t.section(text) for text in _chunks([drill_line(s) for s in statuses])]
    else:
        blocks.append(t.section("No environment allows drills."))
    if recoveries:
        lines = [recovery_line(r) for r in recoveries]
        blocks += [t.section("*Recent incidents*"), *(t.section(x) for x in _chunks(lines))]
    return blocks


def _chunks(lines: list[str]) -> list[str]:
    """Join lines into texts that each fit one section."""
    out: list[str] = []
    for line in lines:
        if out and len(out[-1]) + 1 + len(line) <= t.SECTION_LIMIT:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out
