"""Ack first, work later: the bot's own bounded pool for what listeners do after the ack.

Slack waits 3 s for an ack and the ack carries no result, so a listener's
answer must never queue behind another request's work. Bolt (with
`process_before_response=False`) runs a whole listener on its listener
executor, a pool of 5 threads (slack_bolt/app/app.py), and the HTTP worker waits
until the listener calls `ack()`. A listener that acks and then, in the same
function, calls Slack or Kubernetes holds one of those threads for seconds:
five slow `views.open` calls fill the pool, and the sixth request, even an
unrelated `/rollback help`, waits for a thread before it can ack.

So what a listener does after its ack runs here, on `Later`: a pool of
`threads` threads with a queue of at most `queue` tasks, separate from
Bolt's and from the HTTP server's threads. Those only ever run the ack part
(a parse and, where the answer depends on it, one indexed database read),
which never waits on Slack or Kubernetes. `after_ack` is the decorator for
listeners whose ack says nothing (buttons, form changes, the home tab): it
acks on Bolt's thread and hands the whole listener to the pool. Listeners
whose ack depends on the request call `later.submit(...)` after `ack(...)`.

We did not use Bolt's lazy listeners (`ack=..., lazy=[...]`): Bolt's
`ThreadLazyListenerRunner` submits the lazy functions to the same listener
executor the acks run on, so they would still compete; and a lazy function
is re-dispatched through the whole middleware chain.

Since every listener only acks and hands its work to `Later`, the Bolt app
runs with `process_before_response=True` (bot/app.py): the listener runs on
the HTTP server's thread and the answer leaves as soon as it returns. With
Bolt's default, each request also waited for a thread of Bolt's executor and
then for Bolt's HTTP thread, which polls for the ack every 10 ms
(slack_bolt/listener/thread_runner.py, `time.sleep(0.01)`): two more threads
to wait for under load (docs/benchmarks.md compares the two). A listener must
therefore never do I/O after its `ack()` itself.

When `Later` (handlers/pool.py) is full, the person is told the bot is
busy and nothing was done.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.application.flows import Flows
from bot.application.requests import Received
from handlers.errors import failure_text, tell
from handlers.payloads import Where, where_of
from handlers.pool import Later

log = logging.getLogger(__name__)

BUSY = (
    ":hourglass: The bot is busy with other requests and did nothing with this one; "
    "please try again in a minute."
)


LATE = (
    ":hourglass: The bot was too busy to get to this in time, so it did nothing with it; "
    "please try again."
)


def tell_late(client: WebClient, where: Where | None) -> Callable[[], None]:
    """What a task dropped past its deadline says (it never ran, and never will)."""
    return lambda: tell(client, where, LATE)


def tell_failure(client: WebClient, where: Where | None) -> Callable[[str], None]:
    """What a failed task says to the person who acted, with its correlation id.

    `Later` calls it while handling the task's exception, so `sys.exc_info()` is that
    exception: a database away is said as such (`handlers.errors.failure_text`).
    """

    def told(ref: str) -> None:
        tell(client, where, failure_text(sys.exc_info()[1], ref))

    return told


def _noop_ack(*args: Any, **kwargs: Any) -> None:
    """The ack a deferred listener sees: Bolt's was already sent."""


def after_ack(later: Later) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a listener whose ack says nothing: ack at once, run it on `later`.

    The returned function asks Bolt for `ack`, `body` and `client` besides
    the listener's own arguments (Bolt injects arguments by parameter name,
    read from the signature, which we set explicitly).
    """

    def decorate(listener: Callable[..., None]) -> Callable[..., None]:
        wanted = inspect.signature(listener).parameters

        def acked(**kwargs: Any) -> None:
            kwargs["ack"]()
            body, client = kwargs["body"], kwargs["client"]
            given = {n: v for n, v in kwargs.items() if n in wanted}
            if "ack" in given:
                given["ack"] = _noop_ack
            where = where_of(body)
            taken = later.submit(
                listener,
                on_error=tell_failure(client, where),
                on_expired=tell_late(client, where),
                **given,
            )
            if not taken:
                later.notify(tell, client, where, BUSY)

        # Not functools.wraps: Bolt reads `inspect.getfullargspec(inspect.unwrap(f)).args`
        # (slack_bolt/util/utils.py), so a __wrapped__ would hide the arguments we need.
        acked.__name__ = acked.__qualname__ = getattr(listener, "__name__", "listener")
        names = dict.fromkeys([*wanted, "ack", "body", "client"])
        acked.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        )
        return acked

    return decorate


class Arrivals:
    """The requests (trigger ids, form submissions) this process saw lately, so a retry
    is answered in its ack.

    Opening and submitting the form ack before anything touches the database:
    the durable once-only record (`Flows.receive`, a write
    that can wait on SQLite's write lock behind other requests' work) is made
    after the ack, on the work pool. A retry or a replay reaching this process
    is answered from here at once; one reaching another process (or this one
    after `KEPT` newer requests) is told by the durable record after its ack.
    """

    KEPT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, str | None] = OrderedDict()

    def arrive(self, key: str) -> Received | None:
        """Note `key`; None the first time, else how the first one is doing."""
        with self._lock:
            if key in self._seen:
                return Received(first=False, outcome=self._seen[key])
            self._seen[key] = None
            while len(self._seen) > self.KEPT:
                self._seen.popitem(last=False)
            return None

    def settle(self, key: str, outcome: str) -> None:
        """Remember what the first request with `key` did."""
        with self._lock:
            if key in self._seen:
                self._seen[key] = outcome

    def record(self, flows: Flows, key: str) -> Received:
        """After the ack: write the durable once-only record of `key`. A repeat that another
        process (or this one long ago) received first is told what that one did, and this
        process remembers it for the next repeat."""
        received = flows.receive(key)
        if not received.first and received.outcome is not None:
            self.settle(key, received.outcome)
        return received

    def done(self, flows: Flows, key: str, outcome: str) -> None:
        """Record what the request `key` did, durably and in memory, for its repeats."""
        flows.settle(key, outcome)
        self.settle(key, outcome)

    def forget(self, key: str) -> None:
        """Forget a request that did nothing, so the same one may act later."""
        with self._lock:
            self._seen.pop(key, None)


def act_once(
    ack: Ack,
    work: Callable[[], None],
    *,
    later: Later,
    arrivals: Arrivals,
    key: str,
    what: str,
    answer: dict[str, Any],
    client: WebClient,
    where: Where,
) -> None:
    """A slash command that acts: ack `answer` before any database or Slack call, then run
    `work` (which records `key` once, `Arrivals.record`) on the pool. A repeat this process
    saw is answered in its ack from memory, a full pool is said in the ack."""
    seen = arrivals.arrive(key)
    if seen is not None:
        ack(response_type="ephemeral", text=f":information_source: {seen.repeated(what)}")
        return
    if not later.has_room():  # said in the ack: no Slack call on this thread
        arrivals.forget(key)
        ack(response_type="ephemeral", text=BUSY)
        return
    ack(**answer)

    # the room can have gone to another request since has_room()
    def late() -> None:  # it never ran: the same request may act when sent again
        arrivals.forget(key)
        tell(client, where, LATE)

    if not later.submit(work, on_error=tell_failure(client, where), on_expired=late):
        arrivals.forget(key)
        later.notify(tell, client, where, BUSY)
