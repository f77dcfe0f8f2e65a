"""App Home: the active incidents and runs, with links to their threads."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.models.views import View

from bot.drills import Drills
from bot.recovery import recent
from bot.store import ACTIVE_STATES
from handlers import blocks, drill_blocks
from handlers.deps import Deps
from handlers.flows import flows_for
from handlers.lazy import after_ack
from handlers.text import permalink


def thread_link(slack: dict[str, Any]) -> str | None:
    """Return the permalink of a run's thread, if it has one."""
    if not slack.get("channel") or not slack.get("thread_ts"):
        return None
    return permalink(slack["channel"], slack["thread_ts"])


def register(app: App, deps: Deps) -> None:
    """Publish the home tab when a user opens it."""

    drills = Drills(flows_for(deps))

    @app.event("app_home_opened")
    @after_ack(deps.later)
    def opened(event: dict[str, Any], client: WebClient) -> None:
        runs = deps.store.runs(states=ACTIVE_STATES)
        shown = blocks.home_view_blocks([(r, thread_link(r.slack)) for r in runs])
        shown += drill_blocks.home_section(drills.statuses(), recent(deps.store))
        view = View(type="home", blocks=shown)
        client.views_publish(user_id=event["user"], view=view)
