"""What every handler module is given by `register(app, deps)`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from slack_bolt.middleware import Middleware
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient

from bot.application.drills import Drills
from bot.application.flows import Flows
from bot.application.posted import Posted
from bot.application.reads import Reads
from bot.application.verification import MetricsReader
from bot.config import RollbackConfig
from bot.execution.planner import Planner
from handlers.pool import Later


@dataclass
class HomeViewers:
    """Who looked at the home tab lately, and whether what it shows changed since.

    The incident thread sets `changed` when a run changes; `handlers.home.refresh_loop`
    republishes the tab of the people who opened it within the last hour.
    """

    changed: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Deps:
    """The bot's services, built once by the composition root."""

    config: RollbackConfig
    reads: Reads
    """What handlers read about runs (the store's read side; writes go through the flows)."""
    posted: Posted
    """Where handlers record what they posted in Slack (a card, a thread, each message)."""
    planner: Planner
    client: WebClient
    metrics_reader: MetricsReader
    wake_runner: threading.Event = field(default_factory=threading.Event)
    wake_outbox: threading.Event = field(default_factory=threading.Event)  # the sender's
    later: Later = field(default_factory=Later)  # work after the ack (handlers/lazy.py)
    home: HomeViewers = field(default_factory=HomeViewers)
    flows: Flows | None = None
    """The application layer, built once by the composition root (`bot.app.wire`)."""
    drills: Drills | None = None
    """The drills' use cases on those flows, built with them."""


class BotClient(Middleware):
    """Bolt global middleware: every listener's `client` is the bot's own (`Deps.client`).

    Bolt gives each request a new plain `WebClient` (slack_bolt/app/app.py
    `_init_context`, "a new instance per request regardless of token"), built
    from the app's client's URL, token and retry handlers but not its class. The
    bot's client is the one door Slack text goes through (bot/app.py
    `_RedactingClient`: secrets masked, calls counted in
    `rollback_slack_api_calls_total`), so a listener calling Slack through
    Bolt's would post unmasked text and go uncounted. The bot's token never
    changes, so one client serves every request.
    """

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        req.context["client"] = self.client
        return next()
