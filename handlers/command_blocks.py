"""Pure builders for the replies to /rollback status, history and help, and its refusals."""

from __future__ import annotations

from datetime import datetime

from slack_sdk.models.blocks import Block

from bot.application.timeline import from_to
from bot.config import Approvers
from bot.domain.records import RunRecord
from handlers import text as t
from handlers.blocks import approval_state


def run_line(
    run: RunRecord,
    approvals: list[tuple[str, datetime]],
    *,
    approvers: Approvers | None = None,
) -> str:
    """One line of /rollback status or history."""
    took = ""
    if run.started_at and run.finished_at:
        took = f" in {t.seconds(run.started_at, run.finished_at)}"
    if approvals or run.state == "requested":
        approved = approval_state(run, approvals, approvers=approvers)
    else:
        approved = "break-glass" if run.break_glass else "no approvals"
    return (
        f"*{run.incident_id}* {t.esc(run.target)}/{t.esc(run.environment)} · {run.state}{took} · "
        f"{t.dated(t.esc(from_to(run)))} · requested by {t.user(run.requester)} · {approved} · "
        f"{t.when(run.created_at)}"
    )


def lines_message(title: str, lines: list[str]) -> list[Block]:
    """A title and lines, split over sections so no text passes Slack's limit."""
    blocks: list[Block] = [t.section(f"*{title}*"), *t.sections(lines or ["nothing to show"])]
    return blocks[: t.MESSAGE_BLOCKS]


USAGE = (
    "*Usage*\n"
    "`/rollback <target> <env> [to <revision|timestamp|backup>]` opens the rollback form\n"
    "`/rollback status [INC-…]` shows active rollbacks, or one incident\n"
    "`/rollback cancel INC-…` cancels a rollback not yet running (requester or approver)\n"
    "`/rollback history <target> <env>` lists past rollbacks\n"
    "`/rollback drill <target> <env>` rehearses a rollback and roll-forward (not in production); "
    "a database's restores its newest backup into scratch (anywhere)\n"
    "`/rollback drills` lists each target's last drill and its time to recover\n"
    "`/rollback help` shows this"
)


def help_message(targets: dict[str, list[str]]) -> list[Block]:
    """Usage and the configured targets."""
    known = [
        f"`{t.esc(env)}`: {', '.join(f'`{t.esc(n)}`' for n in names)}"
        for env, names in targets.items()
    ]
    return [t.section(USAGE), t.section("*Targets*\n" + "\n".join(known))]


def refusal(message: str, *, usage: bool = False) -> list[Block]:
    """An ephemeral explanation; with the usage when the command itself was wrong."""
    blocks: list[Block] = [t.section(f":warning: {message}")]  # callers escape what they quote
    if usage:
        blocks.append(t.section(USAGE))
    return blocks
