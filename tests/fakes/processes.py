"""Child processes a test starts: in a process group of their own, stopped in every outcome.

`started` yields the Popen and, however the test ends (passed, failed, interrupted), asks the
child to stop (its stop signal, then `stop_seconds` to exit) and then SIGKILLs the whole group
and every descendant it had, so nothing the child started (a work process, a server) outlives
the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def started(
    argv: Sequence[str],
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_seconds: float = 30.0,
    **popen: Any,
) -> Iterator[subprocess.Popen[Any]]:
    """Start `argv` in a new session (its own process group); stop the group afterwards."""
    process = subprocess.Popen(list(argv), start_new_session=True, **popen)
    try:
        yield process
    finally:
        stop(process, stop_signal=stop_signal, stop_seconds=stop_seconds)


def stop(
    process: subprocess.Popen[Any],
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_seconds: float = 30.0,
) -> None:
    """Signal the process if it runs, wait for it, then SIGKILL what is left of its group and
    of its descendants (a child may have a session of its own, as the front's work process
    does)."""
    descendants = _descendants(process.pid)
    if process.poll() is None:
        process.send_signal(stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=stop_seconds)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def _descendants(pid: int) -> list[int]:
    """The pids of a running process's children, theirs, and so on (Linux's /proc)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found += [int(child) for child in children]
        todo += [int(child) for child in children]
    return found


class Lines:
    """Collect a child's output in the background, so a test can wait for a line."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.seen.append(line)

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.seen):
            found = re.search(pattern, line)
            if found:
                return found
        return None

    def text(self) -> str:
        return "".join(self.seen)


@contextmanager
def daemon(argv: Sequence[str], *, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in the background, its output to `log`; stop it (and its group) after."""
    with log.open("wb") as out, started(argv, stdout=out, stderr=subprocess.STDOUT) as process:
        yield process
