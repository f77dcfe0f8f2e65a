"""Pure builders for the end of a run: a failure loudly, a success in one line.

The failure is broadcast from the thread with who must act, what production runs now, what
is left undone and the ways on (`bot.domain.aftermath`); once retried, the same
message says where the retry is. A success is one calm line to the channel.
"""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement

from actions.base import readable
from bot.application.timeline import outcome_now, sentence_after
from bot.domain.aftermath import Aftermath
from bot.domain.records import RunRecord
from bot.domain.states import RunKind
from handlers import drill_blocks
from handlers import text as t
from handlers.blocks import versions
from handlers.ids import Action
from handlers.ids import Block as BlockId


def failure_message(
    run: RunRecord,
    *,
    people: list[str],
    after: Aftermath | None = None,
    retried_by: str | None = None,
) -> list[Block]:
    """The loud failure, broadcast from the thread: who must act, what runs now, what is left,
    and the ways on (`bot.domain.aftermath`): Retry failed step, Re-plan, and where the failure
    left
    maintenance on, Leave maintenance on / Turn maintenance off."""
    if run.state != "failed":  # retried: its outcome was cleared and it runs again
        return retried_message(run, retried_by=retried_by)
    said = outcome_now(run, after)
    now = sentence_after(said, "Production now:") or "unknown: check the target by hand"
    undone = sentence_after(said, "Not run:") or (
        "nothing left in the plan"
        if after is not None and after.turned_off_by
        else "nothing; every step was attempted"
    )
    first = said.split(". Ran:")[0].split(". Manual intervention required")[0]
    mentions = " ".join(dict.fromkeys(t.user(p) for p in people if p))
    blocks: list[Block] = [
        t.section(
            f":red_circle: *{run.incident_id}: the rollback of {versions(run)} failed.* "
            f"{mentions}: "
            + (
                "marked resolved (below)."
                if after and after.resolved_by
                else "manual intervention required."
            )
        ),
        t.section(
            f"*What failed:* {t.dated(t.esc(first))}\n*Production now:* {t.dated(t.esc(now))}\n"
            f"*Left undone:* {t.dated(t.esc(undone))}"
        ),
    ]
    if after is not None and after.left_on_by and after.maintenance_on:
        blocks.append(
            t.context(f":construction: Maintenance stays on: {t.user(after.left_on_by)} decided.")
        )
    if after is not None and after.turned_off_by:
        blocks.append(
            t.context(
                f":white_check_mark: Maintenance turned off by {t.user(after.turned_off_by)}."
            )
        )
    if after is not None and after.resolved_by:
        blocks.append(
            t.context(
                f":white_check_mark: Resolved by {t.user(after.resolved_by)} at "
                f"{t.when(after.resolved_at)}."
            )
        )
        return blocks
    blocks.append(ActionsBlock(block_id=BlockId.FAILURE, elements=_failure_buttons(run, after)))
    return blocks


def retried_message(run: RunRecord, *, retried_by: str | None) -> list[Block]:
    """A failure announcement after its retry: where the retry is now, so the announcement
    never says "running again" of a run that has since ended."""
    who = f" by {t.user(retried_by)}" if retried_by else ""
    lead = f"*{run.incident_id}: the failed rollback of {versions(run)} was retried*{who}"
    if run.state == "succeeded":
        said = f":large_green_circle: {lead} and succeeded at {t.when(run.finished_at)}."
    elif run.state == "failed":
        said = f":red_circle: {lead} and failed again: see the newer failure message."
    else:
        said = f":arrows_counterclockwise: {lead}; it is {run.state} again, progress in the thread."
    return [t.section(said)]


def _failure_buttons(run: RunRecord, after: Aftermath | None) -> list[ButtonElement]:
    buttons: list[ButtonElement] = []
    if after is not None and after.failed is not None:
        step = after.failed
        confirm = t.confirm(
            "Retry the failed step?",
            t.esc(
                f"Run the approved plan again from step {step.position + 1} "
                f"({step.words or readable(step.name)}); the steps before it that an "
                "always-step undid run again first. Your click approves it."
            ),
            yes="Retry",
        )
        buttons.append(
            ButtonElement(
                text="Retry failed step",
                action_id=Action.RETRY,
                value=run.id,
                style="primary",
                confirm=confirm,
            )
        )
    buttons.append(ButtonElement(text="Re-plan", action_id=Action.REPLAN, value=run.id))
    buttons.append(
        ButtonElement(
            text="Mark resolved",
            action_id=Action.RESOLVE,
            value=run.id,
            confirm=t.confirm(
                "Mark this failure resolved?",
                "Say that people have handled it: it leaves status and App Home, and "
                "the incident counts as recovered now. Your name and the time are recorded.",
                yes="Mark resolved",
            ),
        )
    )
    if after is not None and after.maintenance_on:
        if not after.left_on_by:
            buttons.append(
                ButtonElement(
                    text="Leave maintenance on", action_id=Action.LEAVE_MAINTENANCE_ON, value=run.id
                )
            )
        buttons.append(
            ButtonElement(
                text="Turn maintenance off",
                action_id=Action.MAINTENANCE_OFF,
                value=run.id,
                style="danger",
            )
        )
    return buttons


def failure_text(run: RunRecord) -> str:
    """Notification text of the failure broadcast, as the run stands now (a retry may have
    ended it)."""
    if run.state == "succeeded":
        return t.esc(f"{run.incident_id}: the rollback of {run.target} succeeded on retry")
    if run.state != "failed":
        return t.esc(f"{run.incident_id}: the rollback of {run.target} was retried; {run.state}")
    return t.esc(f"{run.incident_id}: the rollback of {run.target} failed; action needed")


def success_line(run: RunRecord, *, link: str) -> str:
    """The one calm line to the channel when a rollback succeeded."""
    took = t.seconds(run.started_at, run.finished_at)
    if run.kind == RunKind.DRILL:
        return drill_blocks.success_line(run, took=took, link=link)
    return (
        f":large_green_circle: {run.incident_id}: {versions(run)} rolled back"
        f"{f' in {took}' if took else ''}. <{link}|Thread>"
    )
