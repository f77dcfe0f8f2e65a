"""What every handler module is given by `register(app, deps)`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from slack_sdk import WebClient

from bot.config import RollbackConfig
from bot.plans import Planner
from bot.store import Store
from bot.verification import MetricsReader
from bot.workflow import Workflow
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
    store: Store
    workflow: Workflow
    planner: Planner
    client: WebClient
    metrics_reader: MetricsReader
    wake_runner: threading.Event = field(default_factory=threading.Event)
    wake_outbox: threading.Event = field(default_factory=threading.Event)  # the sender's
    later: Later = field(default_factory=Later)  # work after the ack (handlers/lazy.py)
    home: HomeViewers = field(default_factory=HomeViewers)
