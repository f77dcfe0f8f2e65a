"""Child processes a step starts (pg_restore, git, a restart command), and the runner's fence.

A runner that cannot renew its lease must stop acting before another runner can take it
(`bot.execution.leases`). A step that waits through `StepContext.ticker` is stopped there; a
step blocked in a child process is not waiting on the ticker, so the runner also puts its
fence in a context variable around `Action.run` (`acting_under`), and `run_child` polls it
while the child runs: once the runner must stop acting, the child's whole process group is
killed and the fence's own error (the runner's LeaseLost) raised. A context variable rather
than a parameter, because children are started far below the actions (pgtools' `run_tool` is
called from a dozen places with no StepContext at hand). A thread an action starts itself
begins with an empty context and so sees no fence: the runner's last resort (abandoning the
process) covers such a step, as it covers a long call that starts no child.

Each child runs in a process group of its own (so a timeout or a fence kills what it started
too) and, on Linux, with PR_SET_PDEATHSIG: the kernel sends it SIGKILL when the thread that
started it ends, so a bot that exits or is killed leaves no pg_restore running. The signal
follows the starting *thread* (prctl(2)), which is fine here: `run_child` waits for its child
on the thread that started it. `kill_all` kills every group still running, for a process
about to exit.

A child is never silent for long: `run_child` says through the step's voice
(`actions.voice`) every `SAY_SECONDS` that the child still runs, for how long, and what its
`watch` reads (bytes written, a database's size), so the incident thread's progress line
moves while pg_restore works.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from actions import voice

POLL_SECONDS = 0.1
"""How often a running child's fence is looked at: the delay before a fenced child dies."""

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Fence(Protocol):
    """Whether the step's runner must stop acting now (its lease may soon be another's)."""

    def must_stop(self) -> bool:
        """True once the runner must stop acting."""
        ...

    def check(self) -> None:
        """Raise the runner's own error once it must stop acting."""
        ...


_FENCE: ContextVar[Fence | None] = ContextVar("rollback_bot_fence", default=None)


@contextmanager
def acting_under(fence: Fence) -> Iterator[None]:
    """Make `fence` the one children started on this thread (and context) answer to."""
    token = _FENCE.set(fence)
    try:
        yield
    finally:
        _FENCE.reset(token)


def current_fence() -> Fence | None:
    """The fence of the step running here, if a runner set one."""
    return _FENCE.get()


class Fenced(Exception):
    """The fence said stop but raised nothing itself (a fence that only answers must_stop)."""


_live: set[int] = set()
_live_lock = threading.Lock()


def run_child(
    argv: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    merge_stderr: bool = False,
    watch: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in its own process group and return what it said.

    `watch`: what the child has done so far, in words, said with its running time every
    `voice.SAY_SECONDS` to the step's emit (`actions.voice`); an error reading it is said
    instead.

    The group is killed when `timeout` passes (subprocess.TimeoutExpired is raised, as
    `subprocess.run` does) or when the step's fence says the runner must stop acting (the
    fence's error is raised). OSError (no such program) comes through unchanged.
    """
    proc = subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),
    )
    with _live_lock:
        _live.add(proc.pid)
    try:
        return _wait(proc, list(argv), timeout=timeout, watch=watch)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        with _live_lock:
            _live.discard(proc.pid)


def _wait(
    proc: subprocess.Popen[str],
    argv: list[str],
    *,
    timeout: float,
    watch: Callable[[], str] | None,
) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    deadline = started + timeout
    fence = current_fence()
    cadence = voice.Cadence(started)
    while True:
        left = deadline - time.monotonic()
        try:
            out, err = proc.communicate(timeout=max(0.0, min(POLL_SECONDS, left)))
            return subprocess.CompletedProcess(argv, proc.returncode, out, err or "")
        except subprocess.TimeoutExpired:
            pass
        if fence is not None and fence.must_stop():
            _kill_group(proc)
            fence.check()
            raise Fenced(f"{argv[0]} was stopped: the runner must stop acting")
        if time.monotonic() >= deadline:
            _kill_group(proc)
            raise subprocess.TimeoutExpired(argv, timeout)
        if cadence.due():
            voice.say(_still(argv[0], time.monotonic() - started, watch))


def _still(program: str, seconds: float, watch: Callable[[], str] | None) -> str:
    """`pg_restore still running after 40 s: 1.2 GB in app_recovery so far`."""
    line = f"{os.path.basename(program)} still running after {seconds:.0f} s"
    if watch is None:
        return line
    try:
        return f"{line}: {watch()}"
    except Exception as exc:  # a reading, never a reason to stop the child
        return f"{line} (its progress could not be read: {type(exc).__name__})"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child's process group, then reap the child and drain its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild left the group and holds a pipe
        proc.wait()


def kill_all() -> int:
    """SIGKILL every child group still running (a process about to exit); return how many."""
    with _live_lock:
        groups = list(_live)
    for pid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return len(groups)


def live_children() -> list[int]:
    """The pids of the children running now."""
    with _live_lock:
        return sorted(_live)


def _die_with(parent: int) -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGKILL the child when its starter ends.

    subprocess warns that a preexec function in a threaded program may deadlock on a lock
    another thread held at the fork, so the child does as little as it can before exec: one
    prctl, through a function looked up at import, and one getppid, neither taking a lock. A
    parent already gone before the prctl took effect is caught by the getppid check
    (prctl(2)'s own advice).
    """
    if _prctl is None:
        return None
    prctl = _prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int, int], int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return function


_prctl = _load_prctl()
