"""Approve, Reject and Cancel buttons, and the people's ticks on the verification checklist.

The click is acked at once. Who the user is comes from Slack's signed
payload; which approver groups they are in is asked of Slack
(`usergroups.users.list`) and cached for a minute. Before an approval counts,
the plan is rebuilt from the live systems and its hash compared with the one
requested: an approval is for one exact plan. A refusal is an ephemeral
message to the person who clicked, and nothing changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from actions.base import ActionError
from bot.config import Environment
from bot.models import Run
from bot.verification import TICK, ticked_by
from bot.workflow import Refused
from handlers import payloads
from handlers.deps import Deps
from handlers.errors import tell
from handlers.ids import Action
from handlers.payloads import BadPayload
from handlers.thread import IncidentThread

log = logging.getLogger(__name__)
GROUP_CACHE_SECONDS = 60.0


class Approvals:
    """Turns button clicks into workflow calls and thread updates."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.thread = IncidentThread(deps)
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    def groups_of(self, env: Environment, user: str) -> frozenset[str]:
        """Return the configured approver groups `user` belongs to."""
        found = set()
        for group in env.approvers.groups:
            members = self._members(group)
            if user in members:
                found.add(group)
        return frozenset(found)

    def _members(self, group: str) -> frozenset[str]:
        now = time.monotonic()
        hit = self._groups.get(group)
        if hit and now - hit[0] < GROUP_CACHE_SECONDS:
            return hit[1]
        users = frozenset(self.deps.client.usergroups_users_list(usergroup=group)["users"])
        self._groups[group] = (now, users)
        return users

    def current_hash(self, run: Run) -> str:
        """Rebuild the run's plan from the live systems and return its hash."""
        env = self.deps.config.environment(run.environment)
        plan = self.deps.planner.build(
            env_name=run.environment, env=env, target=run.target, point=run.point, force=run.force
        )
        return plan.hash

    def approve(self, run_id: str, user: str) -> str | None:
        """Count an approval; return a refusal to show the user, or None."""
        run = self.deps.store.run(run_id)
        if run is None:
            return "this rollback no longer exists"
        env = self.deps.config.environment(run.environment)
        try:
            current = self.current_hash(run) if run.state == "requested" else None
            outcome = self.deps.workflow.approve(
                run_id, user=user, user_groups=self.groups_of(env, user), current_plan_hash=current
            )
        except Refused as exc:
            after = self.deps.store.run(run_id)
            if after is not None and after.state != run.state:
                self.thread.refresh(run_id)
            return str(exc)
        except (ActionError, OSError) as exc:
            return f"the plan can no longer be built, so it cannot be approved: {exc}"
        self.thread.refresh(run_id)
        if outcome.started:
            self.deps.wake_runner.set()
        return None

    def reject(self, run_id: str, user: str) -> str | None:
        """Reject; return a refusal or None."""
        return self._simple(run_id, user, "reject")

    def cancel(self, run_id: str, user: str) -> str | None:
        """Cancel; return a refusal or None."""
        return self._simple(run_id, user, "cancel")

    def _simple(self, run_id: str, user: str, verb: str) -> str | None:
        run = self.deps.store.run(run_id)
        if run is None:
            return "this rollback no longer exists"
        env = self.deps.config.environment(run.environment)
        groups = self.groups_of(env, user)
        try:
            if verb == "reject":
                self.deps.workflow.reject(run_id, user=user, user_groups=groups)
            else:
                self.deps.workflow.cancel(run_id, user=user, user_groups=groups)
        except Refused as exc:
            return str(exc)
        self.thread.refresh(run_id)
        return None

    def tick(self, run_id: str, user: str, selected: set[str]) -> None:
        """Record who ticked or unticked which checklist items, then re-render the list."""
        run = self.deps.store.run(run_id)
        if run is None:
            return
        before = set(ticked_by(self.deps.store.events(run.incident_id)))
        for key in sorted(selected ^ before):
            self.deps.store.add_event(
                incident_id=run.incident_id,
                run_id=run.id,
                kind=TICK,
                actor=user,
                detail={"item": key, "checked": key in selected},
            )
        self.thread.post_checklist(run)


def _run_of_message(deps: Deps, channel: str | None, ts: str) -> str | None:
    for run in deps.store.runs(limit=200):
        if run.slack.get("channel") == channel and ts in (
            run.slack.get("checklist_ts"),
            run.slack.get("plan_ts"),
        ):
            return run.id
    return None


def _button(verb: Callable[[str, str], str | None]) -> Callable[..., None]:
    """A listener that acks, applies `verb` and explains a refusal to the clicker."""

    def clicked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            parsed = payloads.click(body)
        except BadPayload as exc:
            tell(client, payloads.where_of(body), f":warning: {exc}")
            return
        refusal = verb(parsed.run_id, parsed.where.user)
        if refusal is not None:
            tell(client, parsed.where, f":warning: {refusal[0].upper()}{refusal[1:]}.")

    return clicked


def register(app: App, deps: Deps) -> None:
    """Listen for the thread's buttons and checkboxes."""
    approvals = Approvals(deps)
    verbs = {
        Action.APPROVE: approvals.approve,
        Action.REJECT: approvals.reject,
        Action.CANCEL: approvals.cancel,
    }

    for action_id, verb in verbs.items():
        app.action(action_id)(_button(verb))

    @app.action(Action.VERIFY)
    def ticked(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            parsed = payloads.tick(body)
        except BadPayload as exc:
            tell(client, payloads.where_of(body), f":warning: {exc}")
            return
        run_id = _run_of_message(deps, parsed.where.channel, parsed.message_ts)
        if run_id is None:
            tell(client, parsed.where, ":warning: This checklist belongs to no known rollback.")
            return
        approvals.tick(run_id, parsed.where.user, set(parsed.selected))
