"""Resume sync, and the thread messages that follow a successful Kubernetes rollback.

The button: an approver presses Resume sync on the message that says what to
revert in Git. The listener acks at once (`after_ack`), parses the click, and
calls the one use case (`bot.application.resync.Resync`); a refusal (not an approver, the
run did not succeed, nothing suspended) is told to the presser only and
changes nothing; a second press is told who resumed it and when. The result
reaches the thread through the outbox (`gitops.resumed`), like everything the
bot says there.

The messages: `MESSAGES` maps outbox kinds to their rendering, which
`handlers.outbox.SlackOutbox` calls (for `run.finished` after its own): the
held-sync message with the button, posted once after a successful run that
left a GitOps owner suspended; the resume result (the held message loses its
button and says who resumed it); the hold's news after a Git proposal (loud for a
review closed or conflicting, a bad commit, a reconcile that changed something; a quiet
line once the loop is closed); the re-check's alert (broadcast, requester
and approvers mentioned) or its quiet line (`bot.execution.recheck`). Each has a slot,
so a repeated delivery never posts twice.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.application.resync import held_owners
from bot.domain.records import OutboxRecord, RunRecord
from handlers import gitops_blocks as blocks
from handlers import payloads
from handlers.delivery import delivery_error
from handlers.deps import Deps
from handlers.errors import tell
from handlers.flows import Groups, flows_for
from handlers.ids import Action
from handlers.lazy import after_ack
from handlers.listen import on_run
from handlers.payloads import Click
from handlers.thread import IncidentThread

HELD = "gitops:held"


def register(app: App, deps: Deps) -> None:
    """Listen for Resume sync."""
    resync = flows_for(deps).resync
    groups = Groups(deps)

    @app.action(Action.RESUME_SYNC)
    @after_ack(deps.later)
    @on_run(deps, payloads.click, lambda click: click.run_id)
    def resume_sync(click: Click, run: RunRecord, client: WebClient) -> None:
        user = click.where.user
        outcome = resync.resume(run.id, user=user, user_groups=groups.of(run.environment, user))
        if not outcome.resumed:
            tell(client, click.where, blocks.already_text(outcome))


# --- outbox messages -----------------------------------------------------------------------


def _post_once(thread: IncidentThread, run: RunRecord, slot: str, **content: Any) -> None:
    """Post in the run's thread unless slot `slot` already has a message; record its ts."""
    if thread.deps.reads.post(run.id, slot) is not None:
        return
    posted = _call(
        thread,
        "chat_postMessage",
        channel=run.slack["channel"],
        thread_ts=run.slack["thread_ts"],
        **content,
    )
    thread.posted.message(run.id, slot, channel=posted["channel"], ts=posted["ts"])


def _call(thread: IncidentThread, method: str, **kwargs: Any) -> Any:
    try:
        return getattr(thread.client, method)(**kwargs)
    except (SlackApiError, OSError, http.client.HTTPException) as exc:
        raise delivery_error(method, exc) from exc


def _held(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """After a successful run that left GitOps sync suspended: what to revert, Resume sync."""
    fresh = thread.deps.reads.run(run.id)
    if fresh is None or fresh.state != "succeeded":
        return
    owners = held_owners(fresh)
    if not owners:
        return
    env = thread.deps.config.environment(fresh.environment)
    content = {
        "text": blocks.held_text(fresh),
        "blocks": blocks.held_message(
            fresh, owners, approvers=env.approvers, resume=thread.deps.reads.resume(fresh.id)
        ),
    }
    slot = thread.deps.reads.post(fresh.id, HELD)
    if slot is None:
        _post_once(thread, fresh, HELD, **content)
    else:
        _call(thread, "chat_update", channel=slot.channel, ts=slot.ts, **content)


def _resumed(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """Who resumed the sync: the held message loses its button, the thread is told."""
    if message.detail.get("ok"):
        _held(thread, run, message)
    _post_once(
        thread, run, f"gitops:resumed:{message.id}", text=blocks.resumed_text(message.detail)
    )


def _people(thread: IncidentThread, run: RunRecord) -> list[str]:
    """Who a loud message mentions: the requester, who approved, the approvers."""
    env = thread.deps.config.environment(run.environment)
    approved = [u for u, _ in thread.deps.reads.approvals(run)]
    return [run.requester, *approved, *env.approvers.users]


def _hold(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """News of the hold: loud and broadcast, or the quiet line that closes it."""
    slot = f"gitops:hold:{message.id}"
    if not message.detail.get("loud"):
        _post_once(thread, run, slot, text=blocks.hold_done_line(message.detail))
        return
    _post_once(
        thread,
        run,
        slot,
        reply_broadcast=True,
        text=blocks.hold_text(run, message.detail),
        blocks=blocks.hold_alert(run, message.detail, people=_people(thread, run)),
    )


def _drift(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    """The re-check found another template: loud, broadcast, people mentioned."""
    people = _people(thread, run)
    _post_once(
        thread,
        run,
        f"recheck:{message.detail.get('position')}",
        reply_broadcast=True,
        text=blocks.drift_text(run, message.detail),
        blocks=blocks.drift_alert(run, message.detail, people=people),
    )


def _steady(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    slot = f"recheck:{message.detail.get('position')}"
    _post_once(thread, run, slot, text=blocks.steady_line(message.detail))


def _not_rechecked(thread: IncidentThread, run: RunRecord, message: OutboxRecord) -> None:
    slot = f"recheck:{message.detail.get('position')}"
    _post_once(thread, run, slot, text=blocks.recheck_failed_line(message.detail))


Deliver = Callable[[IncidentThread, RunRecord, OutboxRecord], None]
MESSAGES: dict[str, Deliver] = {
    "run.finished": _held,
    "gitops.resumed": _resumed,
    "gitops.hold": _hold,
    "recheck.drift": _drift,
    "recheck.steady": _steady,
    "recheck.failed": _not_rechecked,
}
"""Outbox kinds rendered here (`handlers.outbox.SlackOutbox(more=MESSAGES)`)."""
