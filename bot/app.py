"""The composition root: build the Slack app, the runner and the HTTP endpoint from settings.

`create_app` builds the Bolt app and registers each handler module with the
same `Deps`; no module-level app exists, so tests and the demo build as many
as they like, side by side. `BotProcess` owns what runs: the runner thread
and either the HTTP endpoint (Slack's request URL at POST /slack/events,
GET /healthz) or Socket Mode.

Stopping (SIGTERM from Kubernetes, or Ctrl-C) is `BotProcess.stop`: stop the
ways in first (Socket Mode disconnects, the HTTP server refuses new
connections and answers those in flight), then stop the runner claiming new
work and give the run it is executing `shutdown_seconds` to reach the end of
its pass. A run still busy then is handed back (its lease released), so
another replica resumes it at once under the resume contract instead of
waiting for the lease to expire; the process then exits. Kubernetes'
`terminationGracePeriodSeconds` must exceed `shutdown_seconds` plus the HTTP
drain, or it SIGKILLs first.

`/healthz` is liveness: the process answers HTTP, and the parts that do the
work are not stuck (no task after an ack and no runner loop pass has taken
longer than `work_stuck_seconds`), else the platform restarts the process.
`/readyz` is readiness: the bot's database answers and takes a write (a probe
rolled back; a SQLite file's disk not full), its schema is current, and the
runner loop's `last_beat` is fresh.

One process a container: the listeners ack on the HTTP server's thread and
hand their work to the bounded pool (`deps.later`, handlers/lazy.py) in this
same process. Slack's need is an ack within 3 seconds; more capacity is more
replicas on the one database, not more processes here.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter

from actions.clock import SYSTEM, Ticker
from bot.application.drill_schedule import DrillSchedules
from bot.application.drills import DrillRecorder, Drills
from bot.application.flows import Flows
from bot.application.monitoring import Monitor
from bot.application.posted import Posted
from bot.application.reads import Reads
from bot.application.verification import MetricsReader, read_metrics
from bot.config import RollbackConfig
from bot.execution.drill_evidence import DrillEvidence
from bot.execution.fixes import StoreHistory
from bot.execution.outbox import Sender
from bot.execution.planner import Planner, RateSource, target_factory
from bot.execution.recheck import Rechecks
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.store import Lease, SchemaOutOfDate, Store, make_engine, require_current_schema
from bot.persistence.versions import VersionBook
from bot.secrets import Secrets, collect, guard_engine, install_log_redaction
from bot.server import HttpServer, Limits
from bot.serving.drill_metrics import watch_drills
from bot.serving.metrics import BotMetrics, MeteredProgress
from bot.settings import Settings
from handlers import approvals, commands, drills, errors, gitops, home, modals, reviews
from handlers.alerts import AlertWebhook
from handlers.deps import BotClient, Deps
from handlers.flows import drills_for, flows_for
from handlers.guard_api import PREFIX as GUARD_PREFIX
from handlers.guard_api import GuardApi
from handlers.outbox import SlackOutbox
from handlers.pool import Later
from handlers.progress import SlackProgress
from handlers.thread import IncidentThread
from handlers.verify import SlackEndpoint

log = logging.getLogger(__name__)


class _RedactingClient(WebClient):
    """A Web API client that masks secrets in every argument it sends and every file it uploads.

    This is the one door all Slack text goes through (messages, modals, the RCA upload);
    the builders in handlers/ stay pure and need not know what is secret.
    """

    secrets: Secrets = Secrets()
    metrics: BotMetrics | None = None

    def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> Any:
        if self.metrics is not None:
            self.metrics.slack_calls.labels(api_method).inc()
        try:
            return super().api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=self._mask(data),
                params=self._mask(params),
                json=self._mask(json),
                headers=headers,
                auth=auth,
            )
        except Exception:
            if self.metrics is not None:
                self.metrics.slack_errors.labels(api_method).inc()
            raise

    def files_upload_v2(self, **kwargs: Any) -> Any:
        uploads = kwargs.pop("file_uploads", None)
        if uploads is not None:  # text is masked; a binary `file` (the RCA chart) is kept
            kwargs["file_uploads"] = [
                {k: v if k == "file" else self.secrets.redact_data(v) for k, v in u.items()}
                for u in uploads
            ]
        return super().files_upload_v2(**self._mask(kwargs))

    def _mask(self, values: dict[str, Any] | None) -> Any:
        if not values:
            return values
        return {
            key: value
            if key in ("token", "file", "file_uploads")
            else self.secrets.redact_data(value)
            for key, value in values.items()
        }


class _UpTo(Jitter):
    """Add up to `seconds` random seconds (slack_sdk's RandomJitter adds up to 1)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def recalculate(self, duration: float) -> float:
        return duration + random.random() * self.seconds  # noqa: S311 (a jitter, not a secret)


def build_client(
    settings: Settings, secrets: Secrets | None = None, metrics: BotMetrics | None = None
) -> WebClient:
    """A Web API client that retries rate limits, server errors and dropped connections."""
    waits = BackoffRetryIntervalCalculator(
        backoff_factor=settings.slack_retry_backoff_seconds,
        jitter=_UpTo(settings.slack_retry_jitter_seconds),
    )
    client = _RedactingClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3, interval_calculator=waits),
            ServerErrorRetryHandler(max_retry_count=2, interval_calculator=waits),
            ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=waits),
        ],
    )
    client.secrets = secrets or Secrets()
    client.metrics = metrics
    return client


def _not_the_token_warning(record: logging.LogRecord) -> bool:
    # Bolt reads SLACK_BOT_TOKEN from the environment on its own and then warns that our
    # client (built from the same settings) wins; that is what we want, not news.
    return "`token` will be unused" not in record.getMessage()


def wire(
    store: Store,
    *,
    config: RollbackConfig,
    workflow: Workflow,
    planner: Planner,
    client: WebClient,
    metrics_reader: MetricsReader,
    later: Later | None = None,
) -> Deps:
    """The handlers' services on `store`: what they read (`Reads`), where they record what
    they posted (`Posted`), and the one application layer (`Flows`), whose Slack side is the
    incident thread. Handlers get no store."""
    deps = Deps(
        config=config,
        reads=Reads(store, config, workflow),
        posted=Posted(store),
        planner=planner,
        client=client,
        metrics_reader=metrics_reader,
        later=later if later is not None else Later(),
    )
    deps.flows = Flows(
        store=store,
        workflow=workflow,
        config=config,
        planner=planner,
        thread=IncidentThread(deps),
        wake_runner=deps.wake_runner,
        wake_outbox=deps.wake_outbox,
    )
    deps.drills = Drills(deps.flows)
    return deps


def create_app(settings: Settings, deps: Deps) -> App:
    """Build the Bolt app and register every handler module."""
    logging.getLogger("slack_bolt.App").addFilter(_not_the_token_warning)
    app = App(
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        client=deps.client,
        # Listeners ack and hand their work to deps.later: run them on the HTTP thread, no
        # hop through Bolt's executor and its 10 ms ack polling (handlers/lazy.py).
        process_before_response=True,
        # Over HTTP every request is verified before Bolt sees it (handlers/verify.py
        # SlackEndpoint, the only HTTP way in); Socket Mode's come over Slack's connection.
        request_verification_enabled=False,
    )
    app.use(BotClient(deps.client))  # before any listener's own middleware
    for module in (drills, commands, modals, approvals, home, reviews, gitops):  # drills first
        module.register(app, deps)
    errors.register(app, deps.client, flows=flows_for(deps))
    return app


def _rate_of(store: Store) -> RateSource:
    """The median restore rate (bytes/s) of the last database restores, for estimates."""

    def rate() -> float | None:
        values = sorted(store.steps.values("restore_bytes_per_second"))
        return values[len(values) // 2] if values else None

    return rate


def _watch_later(registry: CollectorRegistry, later: Later, prefix: str) -> None:
    """Export the after-ack pool's queue, busy threads, refusals and waiting, at each scrape."""
    series: dict[str, tuple[str, Any]] = {
        "queued": ("Listener work queued for a thread", "queued"),
        "running": ("Listener work running", "running"),
        "refused": ("Listener work refused: the queue was full", "refused"),
        "failed": ("Listener work that raised", "failed"),
        "done": ("Listener work finished", "done"),
        "expired": ("Listener work dropped unrun: it waited past its deadline", "expired"),
        "waited_seconds": ("Total seconds work waited for a thread", "waited_seconds"),
    }
    for name, (text, attr) in series.items():
        gauge = Gauge(f"{prefix}_{name}", text, registry=registry)
        gauge.set_function(functools.partial(_stat, later, attr))


def _stat(later: Later, attr: str) -> float:
    return float(getattr(later.snapshot(), attr))


def http_limits(settings: Settings) -> Limits:
    """The HTTP server's limits, from settings."""
    return Limits(
        threads=settings.http_threads,
        connection_limit=settings.http_connection_limit,
        max_body_bytes=settings.http_max_body_bytes,
        idle_seconds=settings.http_idle_seconds,
        drain_seconds=settings.shutdown_seconds,
    )


SOCKET_CLOSE_SECONDS = 5.0
"""How long stopping waits for the Socket Mode connection to close (BotProcess._close_socket)."""


class SocketConnection(Protocol):
    """What serving Socket Mode needs of Bolt's SocketModeHandler."""

    def connect(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class BotProcess:
    """A running bot: deps, the Bolt app, the runner thread and one way in."""

    settings: Settings
    config: RollbackConfig
    planner: Planner | None = None
    metrics_reader: MetricsReader = read_metrics
    ticker: Ticker = SYSTEM
    """The clock steps, live progress and the work pool's deadlines run on (a test's fake
    one runs a long poll fast)."""
    store: Store = field(init=False)
    deps: Deps = field(init=False)
    app: App = field(init=False)
    runner: Runner = field(init=False)
    monitor: Monitor = field(init=False)
    alerts: AlertWebhook = field(init=False)
    guard_api: GuardApi = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _http: HttpServer | None = None
    _socket: SocketConnection | None = None
    last_beat: float | None = None  # time.monotonic() of the runner loop's last full pass
    _readiness_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_readiness: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.secrets = collect(
            expanded=self.config.expanded_values, config=self.config, settings=self.settings
        )
        install_log_redaction(self.secrets)
        self.engine = make_engine(self.settings.database_url)
        require_current_schema(self.engine)
        guard_engine(self.engine, self.secrets)
        self.metrics = BotMetrics()
        self.metrics.watch(self.engine)
        self.store = store = Store(self.engine)
        planner = self.planner or Planner(factory=target_factory(restore_rate=_rate_of(store)))
        if planner.drilled is None:  # the verdict cites each backup set's last restore drill
            planner.drilled = DrillEvidence(store, self.config)
        if planner.history is None:  # the verdict weighs other incidents' fixes
            planner.history = StoreHistory(VersionBook(store), self.config)
        self.planner = planner
        workflow = Workflow(store=store, config=self.config)
        self.deps = wire(
            store,
            config=self.config,
            workflow=workflow,
            planner=planner,
            client=build_client(self.settings, self.secrets, self.metrics),
            metrics_reader=self.metrics_reader,
            later=Later(
                threads=self.settings.work_threads,
                queue=self.settings.work_queue,
                deadline=self.settings.work_deadline_seconds,
                stuck_after=self.settings.work_stuck_seconds,
                clock=self.ticker.monotonic,
            ),
        )
        _watch_later(self.metrics.registry, self.deps.later, "rollback_work")
        self.app = create_app(self.settings, self.deps)
        self.sender = Sender(
            store=store,
            deliver=SlackOutbox(
                self.deps, more={**gitops.MESSAGES, **drills.MESSAGES}, alone=drills.ALONE
            ).deliver,
            wake=self.deps.wake_outbox,
        )
        self.runner = Runner(
            store=store,
            workflow=workflow,
            config=self.config,
            planner=planner,
            progress=DrillRecorder(
                MeteredProgress(
                    SlackProgress(
                        self.sender.wake, store.outbox.enqueue, clock=self.ticker.monotonic
                    ),
                    self.metrics,
                    store,
                ),
                store,
                config=self.config,
            ),
            lease_seconds=self.settings.runner_lease_seconds,
            rechecks=Rechecks(store=store, config=self.config, planner=planner),
            ticker=self.ticker,
        )
        self.monitor = Monitor(
            config=self.config,
            store=store,
            planner=planner,
            reader=self.metrics_reader,
            flows=flows_for(self.deps),
        )
        self.alerts = AlertWebhook(
            self.monitor, token=self.settings.alert_webhook_token.get_secret_value()
        )
        self.drill_schedules = DrillSchedules(drills_for(self.deps))  # drills: schedules
        watch_drills(self.metrics.registry, self.drill_schedules.drills.statuses)
        self.guard_api = GuardApi(
            flows_for(self.deps).guard,
            token=self.settings.guard_api_token.get_secret_value(),
        )
        self.metrics.watch_waiting(
            lambda: len(store.runs.find(states=("requested",), limit=10_000))
        )
        self.metrics.watch_outbox(store.outbox.backlog)

    def start_runner(self) -> None:
        """Run approved rollbacks in the background, and poll metrics where configured."""
        self._start(self._run_loop, "runner")
        self._start(lambda: self.sender.serve(self._stop), "outbox-sender")
        self._start(lambda: home.refresh_loop(self.deps, self._stop), "home-refresh")
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
        self.last_beat = time.monotonic()
        while not self._stop.is_set():
            try:
                self.monitor.approve_due()
                self.drill_schedules.start_due()
                self.runner.sweep()
                self.runner.dispatch()
                self.last_beat = time.monotonic()
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

    def liveness(self) -> list[str]:
        """Say what is stuck in this process: empty when alive."""
        problems = []
        stuck = self.deps.later.stuck()
        if stuck is not None:
            problems.append(stuck)
        if self.last_beat is not None and not self._stop.is_set():
            age = time.monotonic() - self.last_beat
            if age > self.settings.work_stuck_seconds:
                problems.append(f"the runner loop has been stuck for {age:.0f}s")
        return problems

    def readiness(self) -> list[str]:
        """Say what keeps this process from taking work: empty when ready."""
        # One check at a time: with the database hanging, probes must not pile up on the
        # HTTP server's few threads; a probe arriving meanwhile gets the last answer.
        if not self._readiness_lock.acquire(blocking=False):
            return [*self._last_readiness, "the previous readiness check is still running"]
        try:
            self._last_readiness = self._check_readiness()
            return self._last_readiness
        finally:
            self._readiness_lock.release()

    def _check_readiness(self) -> list[str]:
        problems = []
        try:
            require_current_schema(self.engine)
        except SchemaOutOfDate as exc:
            problems.append(str(exc))
        except Exception as exc:
            problems.append(f"the bot's database does not answer: {type(exc).__name__}")
        else:
            unwritable = self.store.unwritable()
            if unwritable is not None:
                problems.append(unwritable)
        if self.last_beat is None:
            problems.append("the runner is not running")
        else:
            age = time.monotonic() - self.last_beat
            if age > self.settings.ready_beat_seconds:
                problems.append(f"the runner loop has not completed a pass for {age:.0f}s")
        if self._stop.is_set():
            problems.append("stopping")
        return problems

    def _ready(self, start_response: Any) -> Iterable[bytes]:
        problems = self.readiness()
        status = "503 Service Unavailable" if problems else "200 OK"
        body = json.dumps({"ready": not problems, "problems": problems}).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Serve POST /slack/events through Bolt, POST /alerts, GET /healthz and /readyz, and
        the regression guard's GET /v1/targets/…"""
        if environ.get("PATH_INFO") == "/healthz":
            stuck = self.liveness()
            status = "503 Service Unavailable" if stuck else "200 OK"
            start_response(status, [("Content-Type", "text/plain")])
            return ["\n".join(stuck).encode() if stuck else b"ok"]
        if environ.get("PATH_INFO") == "/readyz":
            return self._ready(start_response)
        if environ.get("PATH_INFO") == "/metrics":
            content_type, body = self.metrics.exposition()
            start_response("200 OK", [("Content-Type", content_type)])
            return [body]
        if environ.get("PATH_INFO") == "/alerts":
            return self._masked(self.alerts, environ, start_response)
        if str(environ.get("PATH_INFO", "")).startswith(GUARD_PREFIX):
            return self._masked(self.guard_api, environ, start_response)
        began = time.monotonic()
        try:
            return self._slack_app(environ, start_response)  # type: ignore[no-any-return]
        finally:
            self.metrics.ack.observe(time.monotonic() - began)

    @functools.cached_property
    def _slack_app(self) -> Any:
        """Bolt behind our signature check: Slack's request URL (POST /slack/events)."""
        secret = self.settings.slack_signing_secret.get_secret_value()
        endpoint = SlackEndpoint(self.app, signing_secret=secret)
        return functools.partial(self._masked, endpoint)

    def _masked(self, app: Any, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Run a WSGI app and mask secrets in its answer (Bolt's acks carry text to Slack)."""
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return lambda data: None

        body = self.secrets.redact_bytes(b"".join(app(environ, capture)))
        status, headers = captured
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def start_http(self, host: str, port: int) -> tuple[str, int]:
        """Serve Slack's request URL in a background thread; return the bound address."""
        self._http = HttpServer(self.wsgi, host=host, port=port, limits=http_limits(self.settings))
        return self._http.start()

    def connect_socket_mode(self, connection: SocketConnection | None = None) -> None:
        """Connect to Slack over Socket Mode; `stop` disconnects."""
        if connection is None:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            # Not SocketModeHandler.start(): it blocks on an Event nothing sets, so SIGTERM
            # could never stop it. connect() returns; our caller waits on its own event.
            connection = SocketModeHandler(
                self.app, self.settings.slack_app_token.get_secret_value()
            )
        connection.connect()
        self._socket = connection

    def stop(self) -> None:
        """Close the ways in, then let the runner finish its pass or hand its run back."""
        deadline = time.monotonic() + self.settings.shutdown_seconds
        self._stop.set()
        self.runner.request_stop()
        self.deps.wake_runner.set()
        self.sender.wake.set()
        if self._socket is not None:
            self._close_socket(self._socket, deadline)
            self._socket = None
        if self._http is not None:
            self._http.stop()
        idle = self.runner.wait_idle(max(0.0, deadline - time.monotonic()))
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if not idle or any(thread.is_alive() for thread in self._threads):
            self._hand_back()
        self.deps.later.shutdown(wait=False)
        self.metrics.close()

    def _close_socket(self, connection: SocketConnection, deadline: float) -> None:
        """Close the Socket Mode connection, waiting at most `SOCKET_CLOSE_SECONDS` for it.

        slack_sdk's builtin client can hang in close(): its session runner thread sets
        the session's `terminated` back to False each time it starts a pass
        (slack_sdk/socket_mode/builtin/client.py `_run_current_session`), so a pass begun
        while close() is between setting it and disconnecting never ends, and close()
        joins that thread for ever. Its threads are daemon threads, so leaving the close
        behind still lets the process exit and hand its run back in time.
        """
        closer = threading.Thread(target=connection.close, name="socket-close", daemon=True)
        closer.start()
        closer.join(timeout=min(SOCKET_CLOSE_SECONDS, max(0.0, deadline - time.monotonic())))
        if closer.is_alive():
            log.warning(
                "the Socket Mode connection did not close within %.0f s; stopping without it",
                SOCKET_CLOSE_SECONDS,
            )

    def _hand_back(self) -> None:
        """Release every run this process holds, so another replica resumes it now."""
        store = self.store
        for run in store.runs.find(states=("approved", "running"), limit=500):
            if run.lease_owner == self.runner.owner:
                store.leases.release(Lease(run.id, run.lease_owner, run.lease_generation))
                log.warning(
                    "%s: stopping mid-step; handed run %s back for another process to resume",
                    run.incident_id,
                    run.id,
                    extra={"incident_id": run.incident_id, "run_id": run.id, "target": run.target},
                )
