"""App Home: what the team needs at a glance, kept fresh for whoever looks.

The tab shows active incidents, the versions kept out after a rollback (with the command
that clears each), the rollbacks waiting for the viewer's approval, break-glass rollbacks
awaiting review, and each target's recent rollbacks with
their time to recover (approval, or start, to the health check passing). It is
published when a person opens it (`app_home_opened`), and republished when a run
changes for the people who opened it within the last hour.

Cost: what is the same for everyone (active runs, requested runs, open reviews,
three recent runs per target and their events) is read once per refresh round,
one indexed query each; only the approvals filter is per person. Changes are
coalesced: `refresh_loop` wakes on a change, republishes, then waits
`REFRESH_EVERY` seconds before the next round, so a rollback's dozen state
changes cost a handful of `views.publish` calls per recent viewer (Slack allows
views.publish at Tier 4, 100+ a minute: https://api.slack.com/methods/views.publish).
Only the `VIEWERS_KEPT` most recent viewers are refreshed; anyone else gets a fresh
tab the next time they open it. Viewers are remembered per bot process.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.views import View

from bot.application.drills import DrillStatus
from bot.application.timeline import service_restored
from bot.config import UnknownTarget
from bot.domain.records import ReviewRecord, RunRecord
from bot.domain.recovery import Recovery as PhaseTimes
from bot.domain.states import ACTIVE_STATES
from bot.domain.versions import VersionMark
from handlers.deps import Deps
from handlers.flows import Groups, drills_for, flows_for
from handlers.home_blocks import HomeContent, Recovery, TargetHistory, home_view_blocks
from handlers.lazy import after_ack
from handlers.text import thread_link

log = logging.getLogger(__name__)

RECENT_PER_TARGET = 3
VIEWER_WINDOW = 3600.0
VIEWERS_KEPT = 50
REFRESH_EVERY = 5.0
FINISHED = ("succeeded", "failed")


@dataclass(frozen=True)
class Snapshot:
    """What the home tab shows everyone, read once per round."""

    disarmed: list[RunRecord]
    """The automatic rollbacks that disarmed automatic rollback of their target."""
    bad_versions: list[VersionMark]
    """Versions marked bad and not cleared."""
    active: list[tuple[RunRecord, str | None, list[tuple[str, datetime]]]]
    """Each run waiting, approved, running, or failed and not resolved; its thread; its
    approvals so far."""
    requested: list[RunRecord]
    reviews: list[tuple[ReviewRecord, str | None]]
    history: list[TargetHistory]
    drills: list[DrillStatus]
    incidents: list[PhaseTimes]


class HomeTab:
    """Builds and publishes people's home tabs."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.groups = Groups(deps)
        self.drills = drills_for(deps)

    def snapshot(self) -> Snapshot:
        """Read what is the same for every viewer."""
        reads = self.deps.reads
        active = reads.runs(states=ACTIVE_STATES)
        # A failed run nobody has resolved still holds production (maintenance, a half
        # rollback): it stays among the active incidents until a person marks it resolved.
        unresolved = reads.unresolved_failures()
        reviews = []
        for review in reads.unreviewed():
            run = reads.run(review.run_id)
            reviews.append((review, thread_link(run.slack) if run else None))
        disarmed = [
            run
            for env_name, env in self.deps.config.environments.items()
            if env.auto_rollback
            for target in env.targets
            if (run := reads.disarmed_by(environment=env_name, target=target)) is not None
        ]
        guard = flows_for(self.deps).guard
        return Snapshot(
            disarmed=disarmed,
            bad_versions=guard.marked_bad(),
            active=[
                (r, thread_link(r.slack), self.deps.reads.approvals(r))
                for r in [*unresolved, *active]
            ],
            requested=[r for r in active if r.state == "requested"],
            reviews=reviews,
            history=self._history(),
            drills=self.drills.statuses(),
            incidents=reads.recent_recoveries(),
        )

    def _history(self) -> list[TargetHistory]:
        histories = []
        for env_name, env in self.deps.config.environments.items():
            for target in env.targets:
                runs = self.deps.reads.runs(
                    environment=env_name, target=target, states=FINISHED, limit=RECENT_PER_TARGET
                )
                histories.append(TargetHistory(env_name, target, [self._recovery(r) for r in runs]))
        return histories

    def _recovery(self, run: RunRecord) -> Recovery:
        """Time to recover: approval (or start) to the health check passing."""
        took = None
        start = run.approved_at or run.started_at
        if run.state == "succeeded" and start is not None:
            events = [e for e in self.deps.reads.events(run.incident_id) if e.run_id == run.id]
            healthy = service_restored(events)
            took = healthy - start if healthy is not None else None
        return Recovery(run=run, took=took, link=thread_link(run.slack))

    def content(self, snapshot: Snapshot, user: str) -> HomeContent:
        """The tab for one person: the shared part and the approvals waiting for them."""
        return HomeContent(
            viewer=user,
            active=snapshot.active,
            waiting=[(r, thread_link(r.slack)) for r in snapshot.requested if self._may(r, user)],
            reviews=snapshot.reviews,
            history=snapshot.history,
            drills=snapshot.drills,
            incidents=snapshot.incidents,
            disarmed=snapshot.disarmed,
            bad_versions=snapshot.bad_versions,
        )

    def _may(self, run: RunRecord, user: str) -> bool:
        """Whether `user` may still approve `run` (an approver, not its requester, not yet)."""
        if user == run.requester:
            return False
        try:
            env = self.deps.config.environment(run.environment)
            groups = self.groups.of(run.environment, user) if env.approvers.groups else frozenset()
        except (UnknownTarget, SlackApiError, OSError):
            return False
        if not self.deps.reads.is_approver(env, user, groups):
            return False
        return user not in {u for u, _ in self.deps.reads.approvals(run)}

    def publish(self, user: str, snapshot: Snapshot | None = None) -> None:
        """Publish `user`'s home tab."""
        content = self.content(snapshot or self.snapshot(), user)
        view = View(type="home", blocks=home_view_blocks(content))
        self.deps.client.views_publish(user_id=user, view=view)

    def opened(self, user: str) -> None:
        """Remember the viewer and publish their tab."""
        viewers = self.deps.home
        with viewers.lock:
            viewers.seen[user] = time.monotonic()
        self.publish(user)

    def recent_viewers(self) -> list[str]:
        """People who opened the tab within VIEWER_WINDOW, newest first, at most VIEWERS_KEPT."""
        viewers, now = self.deps.home, time.monotonic()
        with viewers.lock:
            for user, at in list(viewers.seen.items()):
                if now - at > VIEWER_WINDOW:
                    del viewers.seen[user]
            ranked = sorted(viewers.seen.items(), key=lambda item: item[1], reverse=True)
        return [user for user, _ in ranked[:VIEWERS_KEPT]]

    def refresh(self) -> int:
        """Republish the tab of every recent viewer; return how many were published."""
        users = self.recent_viewers()
        if not users:
            return 0
        snapshot = self.snapshot()
        published = 0
        for user in users:
            try:
                self.publish(user, snapshot)
                published += 1
            except (SlackApiError, OSError) as exc:
                log.warning("home tab of %s not refreshed: %s", user, exc)
        return published


def refresh_loop(deps: Deps, stop: threading.Event, *, every: float = REFRESH_EVERY) -> None:
    """Republish recent viewers' tabs after changes, at most one round every `every` seconds."""
    tab = HomeTab(deps)
    while not stop.is_set():
        if not deps.home.changed.wait(timeout=0.5):
            continue
        deps.home.changed.clear()
        try:
            tab.refresh()
        except Exception:  # the loop must outlive one failed round; the next change retries
            log.exception("home tab refresh failed")
        stop.wait(every)


def register(app: App, deps: Deps) -> None:
    """Publish the home tab when a user opens it."""
    tab = HomeTab(deps)

    @app.event("app_home_opened")
    @after_ack(deps.later)
    def opened(event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") != "home":
            return  # the Messages tab
        tab.opened(event["user"])
