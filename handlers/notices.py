"""Notices to one person that Slack did not take: kept, and sent again until it does.

`handlers.errors.tell` is how every refusal, every "something went wrong", every "too busy"
reaches the person who acted, after the ack. Its first try is made at once; when Slack is
down (a connection refused or dropped, a 5xx, a 429 after the Web API client's own retries)
the notice is handed to the client's `Notices` instead of being dropped:

- every notice goes into the outbox as a `person.notice` (`Flows.notify_person`): durable,
  delivered by the outbox's sender after the outage, as a direct message, once; one said in
  an incident thread the bot opened (found by the thread's ts) is filed under its run, any
  other (a slash command, a form with no run yet) under none (migration 0013);
- only when the database cannot take it either is a notice kept in this process and sent
  again with backoff, honouring Retry-After, by a thread that runs only while something is
  kept; it is lost only if the process dies during both outages, and is given up (logged)
  after `KEEP_SECONDS`.

A notice's first try and its retries are one delivery: it reaches the person once. `tell`
finds the `Notices` of the client it was given (`notices_for`): every listener gets the
bot's one client (`handlers.deps.BotClient`), and `handlers.errors.register` attaches the
outbox to it, so no call site changes.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.application.flows import Flows
from handlers.delivery import TRANSIENT_ERRORS
from handlers.payloads import Where

log = logging.getLogger(__name__)

Send = Callable[[WebClient, Where, str], None]
"""One try at telling a person (`handlers.errors.send`): raises what Slack said."""

KEEP_SECONDS = 3600.0
"""How long a notice is sent again before it is given up."""
KEPT_MAX = 1000
"""How many notices one process keeps at most (the oldest is given up beyond that)."""


def transient(exc: Exception) -> bool:
    """Whether Slack may take the same notice later (down, overloaded, unreachable)."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        return status == 429 or status >= 500 or exc.response.get("error") in TRANSIENT_ERRORS
    return isinstance(exc, (OSError, http.client.HTTPException))


@dataclass(eq=False)
class _Kept:
    where: Where
    text: str
    since: float
    due: float
    delay: float = 1.0


class Notices:
    """The notices Slack did not take, for one client."""

    def __init__(self, client: WebClient, send: Send) -> None:
        self._client = weakref.ref(client)  # the registry's key: no strong reference back
        self._send = send
        self.flows: Flows | None = None
        """The outbox, for notices about a run (`handlers.errors.register` sets it)."""
        self._kept: deque[_Kept] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, where: Where, text: str, *, reason: str) -> None:
        """Deliver `text` to `where.user` once Slack answers again."""
        if self._into_outbox(where, text):
            log.info("telling %s failed (%s); queued in the outbox", where.user, reason)
            return
        log.warning("telling %s failed (%s); kept to send again", where.user, reason)
        now = time.monotonic()
        with self._lock:
            self._kept.append(_Kept(where, text, since=now, due=now + 1.0))
            while len(self._kept) > KEPT_MAX:
                dropped = self._kept.popleft()
                log.error(
                    "gave up telling %s (too many kept): %s", dropped.where.user, dropped.text
                )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="notices", daemon=True)
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        """How many notices wait for Slack in this process."""
        with self._lock:
            return len(self._kept)

    def _into_outbox(self, where: Where, text: str) -> bool:
        """Queue a notice in the outbox, under the run whose thread it was said in if any;
        False when the database cannot take it either."""
        flows = self.flows
        if flows is None:
            return False
        try:
            run_id = None
            if where.channel and where.thread_ts:
                run_id = flows.run_of_thread(where.channel, where.thread_ts)
            flows.notify_person(run_id, user=where.user, text=text)
        except Exception as exc:  # the database is away too: keep it here
            log.warning("the outbox could not take a notice to %s: %s", where.user, exc)
            return False
        return True

    def _serve(self) -> None:
        while True:
            with self._lock:
                if not self._kept:
                    self._thread = None
                    return
                due = min(k.due for k in self._kept)
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            self._deliver_due()

    def _deliver_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [k for k in self._kept if k.due <= now]
        client = self._client()
        for kept in due:
            try:
                if client is None:
                    raise RuntimeError("the Slack client is gone")
                self._send(client, kept.where, kept.text)
            except Exception as exc:
                if not transient(exc) or time.monotonic() - kept.since > KEEP_SECONDS:
                    log.error("gave up telling %s (%s): %s", kept.where.user, exc, kept.text)
                    self._forget(kept)
                    continue
                kept.delay = min(kept.delay * 2, 60.0)
                kept.due = time.monotonic() + max(kept.delay, _retry_after(exc))
                continue
            log.info("told %s after Slack came back", kept.where.user)
            self._forget(kept)

    def _forget(self, kept: _Kept) -> None:
        with self._lock:
            if kept in self._kept:
                self._kept.remove(kept)


def _retry_after(exc: Exception) -> float:
    if isinstance(exc, SlackApiError):
        try:
            return float(exc.response.headers.get("Retry-After", 0))
        except (TypeError, ValueError, AttributeError):
            return 0.0
    return 0.0


_NOTICES: weakref.WeakKeyDictionary[WebClient, Notices] = weakref.WeakKeyDictionary()
_NOTICES_LOCK = threading.Lock()


def notices_for(client: WebClient, send: Send) -> Notices:
    """The `Notices` of `client` (one per client, made on first use, gone with the client)."""
    with _NOTICES_LOCK:
        notices = _NOTICES.get(client)
        if notices is None:
            notices = _NOTICES[client] = Notices(client, send)
        return notices
