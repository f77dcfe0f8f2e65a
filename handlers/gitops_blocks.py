"""Block Kit for what follows a successful Kubernetes rollback: held GitOps sync, the hold's
news (`bot.execution.hold`), re-checks.

Pure builders over domain records (`bot.application.resync.HeldOwner`, the `sync_resumes`
row, outbox details), returning `slack_sdk.models` blocks; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
)

from bot.application.resync import HeldOwner, ResumeOutcome, revert_note
from bot.config import Approvers
from bot.domain.records import ResumeRecord, RunRecord
from handlers import text as t
from handlers.ids import Action
from handlers.ids import Block as BlockId


def _approvers(approvers: Approvers) -> str:
    named = [t.user(u) for u in approvers.users] + [t.group(g) for g in approvers.groups]
    return ", ".join(named) or "the environment's approvers"


def held_text(run: RunRecord) -> str:
    """Notification text of the held-sync message."""
    return t.esc(f"{run.incident_id}: GitOps sync stays suspended until Git is reverted")


def held_message(
    run: RunRecord,
    owners: Sequence[HeldOwner],
    *,
    approvers: Approvers,
    resume: ResumeRecord | None = None,
) -> list[Block]:
    """What must be reverted in Git before resuming, and Resume sync (for approvers) or who did."""
    lines = "\n".join(f"• {t.esc(revert_note(o))}" for o in owners)
    blocks: list[Block] = [
        t.section(f":pause_button: *{run.incident_id}: GitOps sync suspended by the rollback*"),
        t.section(lines),
    ]
    if resume is not None and resume.state == "resumed":
        blocks.append(
            t.context(f":arrow_forward: Sync resumed by {t.user(resume.by)} {t.when(resume.at)}.")
        )
        return blocks
    if any(step.get("name") == "git.propose" for step in run.plan):
        blocks.append(
            t.context(
                ":hourglass: The bot resumes it by itself once its Git change is merged and Git "
                "names what runs; it says so here, and says what keeps it held."
            )
        )
    blocks.append(
        t.context(
            f"Only approvers of {t.esc(run.environment)} may resume it: {_approvers(approvers)}."
        )
    )
    blocks.append(
        ActionsBlock(
            block_id=BlockId.GITOPS,
            elements=[
                ButtonElement(
                    text="Resume sync",
                    action_id=Action.RESUME_SYNC,
                    value=run.id,
                    style="primary",
                    confirm=t.confirm(
                        "Resume the GitOps sync?",
                        "Only once Git no longer describes the version rolled away from: "
                        "resuming before that redeploys it.",
                        yes="Resume sync",
                    ),
                )
            ],
        )
    )
    return blocks


def resumed_text(detail: dict[str, Any]) -> str:
    """The thread line saying who resumed the sync and what the cluster answered."""
    who = t.user(str(detail.get("by") or ""))
    said = t.esc(str(detail.get("outcome") or ""))
    if detail.get("ok"):
        return f":arrow_forward: {who} resumed the GitOps sync: {said}."
    return f":warning: {who} pressed Resume sync, but it failed: {said}. Nothing else changed."


def already_text(resume: ResumeOutcome) -> str:
    """What a second press of Resume sync is told."""
    if resume.state == "resuming":
        return (
            f":hourglass: {t.user(resume.by)} is resuming the sync right now "
            f"(since {t.when(resume.at)}); nothing more was done."
        )
    return (
        f":information_source: The sync was already resumed by {t.user(resume.by)} "
        f"{t.when(resume.at)}; nothing more was done."
    )


def _images(values: Any) -> str:
    return t.esc(", ".join(str(v) for v in values or []) or "no image")


def drift_text(run: RunRecord, detail: dict[str, Any]) -> str:
    """Notification text of the re-check alert."""
    return t.esc(
        f"{run.incident_id}: {detail.get('workload')} no longer runs what the rollback restored"
    )


def drift_alert(run: RunRecord, detail: dict[str, Any], *, people: Sequence[str]) -> list[Block]:
    """The loud re-check alert: who must look, what changed (image from → to)."""
    mentions = " ".join(dict.fromkeys(t.user(p) for p in people if p))
    workload = t.esc(str(detail.get("workload") or run.target))
    return [
        t.section(
            f":rotating_light: *{run.incident_id}: {workload} no longer runs what the rollback "
            f"restored.* {mentions}: something put another pod template back."
        ),
        t.section(
            f"*Image:* {_images(detail.get('restored'))} → {_images(detail.get('live'))}\n"
            f"*Found:* {t.esc(str(detail.get('outcome') or ''))}"
        ),
        t.context(
            "Check who deployed it (GitOps sync resumed before Git was reverted, a pipeline, a "
            "person), then roll back again if the bad version is back."
        ),
    ]


def steady_line(detail: dict[str, Any]) -> str:
    """The quiet line of a re-check that found the rollback in place."""
    return f":white_check_mark: Re-check: {t.esc(str(detail.get('outcome') or ''))}."


def recheck_failed_line(detail: dict[str, Any]) -> str:
    """The re-check could not read the workload, attempt after attempt."""
    return (
        f":warning: Re-check not done: {t.esc(str(detail.get('outcome') or ''))}. "
        "Look at the workload by hand."
    )


HOLD_TITLES = {
    "closed": "the Git change was closed without being merged",
    "conflict": "the Git change cannot be merged",
    "bad": "Git names the bad version again",
    "out-of-sync": "the GitOps owner does not find Git and production in sync",
    "unreadable": "the hold cannot read Git or the cluster",
    "resume-failed": "the sync could not be resumed",
    "changed": "the first reconcile after resuming changed the workload",
    "no-reconcile": "no reconcile was seen after resuming",
    "dropped": "the hold ended without resuming the sync",
}


def hold_text(run: RunRecord, detail: dict[str, Any]) -> str:
    """Notification text of a hold message."""
    event = str(detail.get("event") or "")
    if event == "confirmed":
        return t.esc(f"{run.incident_id}: Git matches production; GitOps sync is back")
    return t.esc(f"{run.incident_id}: {HOLD_TITLES.get(event, 'the GitOps hold needs a look')}")


def _link(detail: dict[str, Any]) -> str:
    url = detail.get("review_url")
    if url:
        return f"<{t.esc(str(url))}|the pull request>"
    if detail.get("commit"):
        return f"commit {t.esc(str(detail['commit'])[:12])} on {t.esc(str(detail.get('branch')))}"
    return "the Git change"


def hold_alert(run: RunRecord, detail: dict[str, Any], *, people: Sequence[str]) -> list[Block]:
    """A loud hold message: what happened, that sync stays held, who must look."""
    mentions = " ".join(dict.fromkeys(t.user(p) for p in people if p))
    lines = "\n".join(f"• {t.esc(str(line))}" for line in detail.get("lines") or [])
    title = HOLD_TITLES.get(str(detail.get("event")), "the GitOps hold needs a look")
    blocks: list[Block] = [
        t.section(f":rotating_light: *{run.incident_id}: {t.esc(title)}.* {mentions}"),
        t.section(lines or t.esc(title)),
    ]
    if detail.get("held"):
        blocks.append(
            t.context(
                f"GitOps sync stays suspended ({t.esc(str(detail['held']))}): the bot resumes it "
                f"by itself once {_link(detail)} is merged and Git names what runs."
            )
        )
    return blocks


def hold_done_line(detail: dict[str, Any]) -> str:
    """The quiet line that closes the hold: Git matched, sync resumed, nothing changed."""
    said = "; ".join(str(line) for line in detail.get("lines") or [])
    matched = f"Git names {detail['matched']}" if detail.get("matched") else "Git names what runs"
    return (
        f":white_check_mark: {t.esc(matched)} ({_link(detail)}): the bot resumed the GitOps "
        f"sync and watched one reconcile: {t.esc(said)}."
    )
