"""The composition root: build the Slack app, the runner and the HTTP endpoint from settings.

`create_app` builds the Bolt app and registers each handler module with the
same `Deps`; no module-level app exists, so tests and the demo build as many
as they like, side by side. `BotProcess` owns what runs: the runner thread
and either the HTTP endpoint (Slack's request URL at POST /slack/events,
GET /healthz) or Socket Mode.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from actions.http import read_metrics
from bot.config import RollbackConfig
from bot.monitoring import Monitor
from bot.outbox import Sender
from bot.plans import Planner, RateSource, target_factory
from bot.runner import Runner
from bot.settings import Settings
from bot.store import Store, make_engine, require_current_schema
from bot.verification import MetricsReader
from bot.workflow import Workflow
from handlers import approvals, commands, errors, home, modals
from handlers.alerts import AlertWebhook
from handlers.deps import Deps
from handlers.thread import IncidentThread, SlackMonitorEvents, SlackOutbox, SlackProgress
from handlers.verify import SignedOnly

log = logging.getLogger(__name__)


def build_client(settings: Settings) -> WebClient:
    """A Web API client that retries rate limits, server errors and dropped connections."""
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


def _not_the_token_warning(record: logging.LogRecord) -> bool:
    # Bolt reads SLACK_BOT_TOKEN from the environment on its own and then warns that our
    # client (built from the same settings) wins; that is what we want, not news.
    return "`token` will be unused" not in record.getMessage()


def create_app(settings: Settings, deps: Deps) -> App:
    """Build the Bolt app and register every handler module."""
    logging.getLogger("slack_bolt.App").addFilter(_not_the_token_warning)
    app = App(
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        client=deps.client,
        process_before_response=False,
    )
    for module in (commands, modals, approvals, home):
        module.register(app, deps)
    errors.register(app, deps.client)
    return app


def _rate_of(store: Store) -> RateSource:
    """The median restore rate (bytes/s) of the last database restores, for estimates."""

    def rate() -> float | None:
        values = sorted(store.step_values("restore_bytes_per_second"))
        return values[len(values) // 2] if values else None

    return rate


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


@dataclass
class BotProcess:
    """A running bot: deps, the Bolt app, the runner thread and one way in."""

    settings: Settings
    config: RollbackConfig
    planner: Planner | None = None
    metrics_reader: MetricsReader = read_metrics
    deps: Deps = field(init=False)
    app: App = field(init=False)
    runner: Runner = field(init=False)
    monitor: Monitor = field(init=False)
    alerts: AlertWebhook = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _http: WSGIServer | None = None

    def __post_init__(self) -> None:
        engine = make_engine(self.settings.database_url)
        require_current_schema(engine)
        store = Store(engine)
        planner = self.planner or Planner(factory=target_factory(restore_rate=_rate_of(store)))
        self.planner = planner
        self.deps = Deps(
            config=self.config,
            store=store,
            workflow=Workflow(store=store, config=self.config),
            planner=planner,
            client=build_client(self.settings),
            metrics_reader=self.metrics_reader,
        )
        self.app = create_app(self.settings, self.deps)
        self.sender = Sender(store=store, deliver=SlackOutbox(self.deps).deliver)
        self.runner = Runner(
            store=store,
            workflow=self.deps.workflow,
            config=self.config,
            planner=planner,
            progress=SlackProgress(self.sender.wake),
            lease_seconds=self.settings.runner_lease_seconds,
        )
        self.monitor = Monitor(
            config=self.config,
            store=store,
            workflow=self.deps.workflow,
            planner=planner,
            reader=self.metrics_reader,
            events=SlackMonitorEvents(IncidentThread(self.deps)),
        )
        self.alerts = AlertWebhook(
            self.monitor, token=self.settings.alert_webhook_token.get_secret_value()
        )

    def start_runner(self) -> None:
        """Run approved rollbacks in the background, and poll metrics where configured."""
        self._start(self._run_loop, "runner")
        self._start(lambda: self.sender.serve(self._stop), "outbox-sender")
        polled = [
            env.monitoring.poll_seconds
            for env in self.config.environments.values()
            if env.monitoring and env.monitoring.poll_seconds and env.metrics
        ]
        if polled:
            self._start(lambda: self._poll_loop(min(polled)), "metrics-poller")

    def _start(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run_loop(self) -> None:
        wake = self.deps.wake_runner
        while not self._stop.is_set():
            try:
                self.monitor.approve_due()
                self.runner.sweep()
                self.runner.dispatch()
            except Exception:
                log.exception("runner pass failed; trying again")
            wake.wait(self.settings.runner_poll_seconds)
            wake.clear()

    def _poll_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.monitor.poll()
            except Exception:
                log.exception("metrics poll failed; trying again in %.0fs", seconds)

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Serve POST /slack/events through Bolt, POST /alerts and GET /healthz."""
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        if environ.get("PATH_INFO") == "/alerts":
            return self.alerts(environ, start_response)
        handler = SlackRequestHandler(self.app, path="/slack/events")
        secret = self.settings.slack_signing_secret.get_secret_value()
        return SignedOnly(handler, signing_secret=secret)(environ, start_response)

    def start_http(self, host: str, port: int) -> tuple[str, int]:
        """Serve Slack's request URL in a background thread; return the bound address."""
        self._http = make_server(
            host, port, self.wsgi, server_class=_Server, handler_class=_QuietHandler
        )
        thread = threading.Thread(target=self._http.serve_forever, name="http", daemon=True)
        thread.start()
        self._threads.append(thread)
        address = self._http.server_address
        return str(address[0]), int(address[1])

    def serve_socket_mode(self) -> None:
        """Connect to Slack over Socket Mode and block until stopped."""
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        SocketModeHandler(self.app, self.settings.slack_app_token.get_secret_value()).start()

    def stop(self) -> None:
        """Stop the HTTP endpoint and the runner."""
        self._stop.set()
        self.deps.wake_runner.set()
        self.sender.wake.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
