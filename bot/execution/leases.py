"""Holding a run's lease: the heartbeat that renews it, the fence a step acts under, abandon.

A runner holds a run by a lease timed on the database's clock (`bot.persistence.store.Lease`).
The heartbeat renews it; when it cannot for the renew deadline (two thirds of the lease by
default) the runner must stop acting, with a third of the lease still to run, so nobody can
have claimed it yet (client-go tools/leaderelection/leaderelection.go, LeaderElector.renew:
retry every RetryPeriod, give up after RenewDeadline, which must be shorter than
LeaseDuration). Stopping reaches a step three ways:

- its waits on `StepContext.ticker` (`Fenced`) raise LeaseLost;
- a child process it started (`actions.children.run_child`, which answers to the `Hold` the
  runner puts around `Action.run` with `actions.children.acting_under`) is killed, process
  group and all, and LeaseLost raised in the step;
- a step still inside its call halfway between the renew deadline and the lease's end (a long
  HTTP call, a library that blocks) makes the process abandon (`Watchdog`): it logs one
  critical line with the incident and the run, kills the children left, and exits with
  status 255 at once, as Kubernetes' controllers do when they stop leading: client-go's
  tools/leaderelection/leaderelection.go, LeaderElector.Run, calls
  `Callbacks.OnStoppedLeading` (deferred) once `renew` gives up, and kube-scheduler's and
  cloud-controller-manager's callbacks there are `klog.Fatalf("leaderelection lost")`, which
  exits 255; so the platform restarts it and no two runners are ever inside one step.
  The other runs of the process lose their leases with it and are resumed by the next
  runner, as after a crash.

The times here are on this process's monotonic clock, counted from the moment the last
successful renewal was *sent*, which is never later than the database's own expiry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from actions import children
from actions.clock import SystemTicker, Ticker
from bot.persistence.store import Lease, LeaseLost, Store

log = logging.getLogger(__name__)

ABANDON_EXIT = 255
"""The exit status of a process that abandoned a step (klog.Fatalf's)."""


def abandon_process(message: str) -> None:
    """Log `message` as critical, kill the children left, and exit at once with 255.

    `os._exit`, not `sys.exit`: the step's thread is still inside its call and cannot be
    unwound, and nothing (atexit, a stuck thread's join) may delay the exit.
    """
    log.critical(message)
    children.kill_all()
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # exiting: a handler that cannot flush changes nothing
            handler.flush()
    sys.stderr.flush()
    os._exit(ABANDON_EXIT)


@dataclass
class Hold:
    """The lease a runner executes a run under, the heartbeat keeping it, the stop signal.

    It is also the fence of the step inside `acting` (`actions.children.Fence`).
    """

    lease: Lease
    heartbeat: Heartbeat
    stopping: threading.Event = field(default_factory=threading.Event)
    acting: str | None = None
    """What is inside `Action.run` now ("INC-…: run …: step …"), for the watchdog's line."""

    def must_stop(self) -> bool:
        """Whether the runner must stop acting (the lease is lost or past its renew deadline)."""
        return self.heartbeat.must_stop()

    def check(self) -> None:
        """Raise LeaseLost at a safe point once the heartbeat found the lease gone or late."""
        if self.heartbeat.must_stop():
            raise LeaseLost(self.lease)

    def check_boundary(self) -> None:
        """Between steps: also hand the run over (HandOver) when the runner is stopping."""
        self.check()
        if self.stopping.is_set():
            raise HandOver(self.lease)

    @contextmanager
    def inside(self, what: str) -> Iterator[None]:
        """Mark the step as inside its call, with children fenced by this hold."""
        self.acting = what
        try:
            with children.acting_under(self):
                yield
        finally:
            self.acting = None


class HandOver(Exception):
    """The runner is stopping: leave the run `running` with its lease free, for another."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        super().__init__(f"{lease.owner} is stopping; run {lease.run_id} is handed over")


class Fenced:
    """The step's ticker: its waits end with LeaseLost once the runner must stop acting.

    A step that waits through `StepContext.ticker` (polls, retries, backoff) is thereby
    cancelled at the renew deadline, before its lease can be taken by another runner.
    """

    def __init__(self, ticker: Ticker, hold: Hold) -> None:
        self._ticker = ticker
        self._hold = hold

    def monotonic(self) -> float:
        return self._ticker.monotonic()

    def sleep(self, seconds: float) -> None:
        self._hold.check()
        if not isinstance(self._ticker, SystemTicker):
            self._ticker.sleep(seconds)
            self._hold.check()
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            heartbeat = self._hold.heartbeat
            heartbeat.lost.wait(min(left, heartbeat.until_renew_deadline() + 0.001))
            self._hold.check()


class Heartbeat:
    """Renews a run's lease in the background while it executes.

    A database error does not end it at once: it retries every tenth of the lease until
    its renew deadline has passed since the last renewal, and only then, or when a renewal
    finds the lease taken, does it set `lost`.
    """

    def __init__(
        self, store: Store, lease: Lease, *, seconds: float, renew_seconds: float, claimed: float
    ) -> None:
        self._store = store
        self._lease = lease
        self.seconds = seconds
        self._renew_seconds = renew_seconds
        self._last_renewed = claimed
        """When the last successful renewal (at first the claim) was sent, monotonic."""
        self._stop = threading.Event()
        self.lost = threading.Event()
        self.taken = False
        """Whether a renewal found the lease another runner's (it ran out unnoticed)."""
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def remaining(self) -> float:
        """Seconds the lease surely still holds (0 once it may have run out)."""
        return max(0.0, self._last_renewed + self.seconds - time.monotonic())

    def until_renew_deadline(self) -> float:
        """Seconds before the runner must stop acting unless a renewal succeeds first."""
        return max(0.0, self._last_renewed + self._renew_seconds - time.monotonic())

    def until_abandon(self) -> float:
        """Seconds before a step still inside its call makes the process abandon: halfway
        from the renew deadline to the lease's end, unless a renewal succeeds first; none
        once the lease is known to be another runner's."""
        if self.taken:
            return 0.0
        margin = (self.seconds - self._renew_seconds) / 2
        return max(0.0, self._last_renewed + self.seconds - margin - time.monotonic())

    def must_stop(self) -> bool:
        """Whether the lease is lost or past its renew deadline (even while a renewal hangs)."""
        return self.lost.is_set() or self.until_renew_deadline() == 0.0

    def _beat(self) -> None:
        wait = self.seconds / 3
        while not self._stop.wait(wait):
            attempted = time.monotonic()
            try:
                held = self._store.leases.renew(self._lease, seconds=self.seconds)
            except Exception as exc:
                if time.monotonic() - self._last_renewed >= self._renew_seconds:
                    log.error(
                        "could not renew the lease on run %s within %.1fs (%s); stopping",
                        self._lease.run_id,
                        self._renew_seconds,
                        exc,
                    )
                    self.lost.set()
                    return
                log.warning(
                    "renewing the lease on run %s failed (%s); retrying", self._lease.run_id, exc
                )
                wait = min(self.seconds / 10, self.until_renew_deadline())
                continue
            if not held:
                log.error("lost the lease on run %s to another runner", self._lease.run_id)
                self.taken = True
                self.lost.set()
                return
            self._last_renewed = attempted
            wait = self.seconds / 3


class Watchdog:
    """Abandons the process when a step is still inside its call too close to the lease's end.

    Its own thread, timed on `Heartbeat.until_abandon` alone, so a renewal hanging in the
    database driver cannot hold it back. A step that left its call in time (LeaseLost from
    its ticker or its child) never meets it; nor does a runner between steps, whose next
    write is refused by the lease's token.
    """

    POLL_SECONDS = 0.1

    def __init__(self, hold: Hold, *, abandon: Callable[[str], None]) -> None:
        self._hold = hold
        self._abandon = abandon
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        heartbeat = self._hold.heartbeat
        while not self._stop.wait(max(min(heartbeat.until_abandon(), 1.0), self.POLL_SECONDS)):
            acting = self._hold.acting
            if heartbeat.until_abandon() > 0 or acting is None:
                continue
            lease = self._hold.lease
            self._abandon(
                f"{acting} is still running {heartbeat.seconds - heartbeat.remaining():.1f}s after"
                f" the last renewal of {lease.owner}'s {heartbeat.seconds:g}s lease, which could"
                f" not be renewed; abandoning the process (exit {ABANDON_EXIT}) before another"
                " runner can take the lease, so that no two runners are inside the step at once"
            )
            return
