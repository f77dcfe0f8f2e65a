"""Wait for SIGTERM or Ctrl-C in the main thread, with our own handlers.

Python runs a signal's handler in the main thread between bytecodes. A signal that lands
after the main thread's last check but before it blocks in a lock with no timeout (an
`Event.wait()` with none) wakes nothing: the handler waits until the lock is released,
which for the event the handler sets is never (CPython's `acquire_timed`, Modules/
_threadmodule.c, only runs handlers when the wait is interrupted or ends). So the main
thread waits in slices of `CHECK_SECONDS`; a signal is acted on within one slice.

Our own handlers, not Python's default Ctrl-C: a process started from a background shell
inherits SIGINT ignored (SIG_IGN), and the default handler is then never installed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CHECK_SECONDS = 0.5
"""The longest a signal that raced the main thread's wait goes unnoticed."""


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Set `stop` on SIGTERM or SIGINT while inside; put the earlier handlers back after."""
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_until_stopped(stop: threading.Event) -> None:
    """Block the main thread until `stop` is set, by a signal handler or another thread."""
    while not stop.wait(CHECK_SECONDS):
        pass
