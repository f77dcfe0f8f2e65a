"""Child processes a step starts: their process group killed on time-out and on the fence,
and dead with the bot that started them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actions import voice
from actions.children import acting_under, live_children, run_child
from tests.fakes.processes import started
from tests.fakes.waiting import wait_for

ROOT = Path(__file__).parents[2]


class Stopped(Exception):
    """The test fence's own error, as LeaseLost is the runner's."""


class Fence:
    """A fence a test closes by hand."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def must_stop(self) -> bool:
        return self.closed.is_set()

    def check(self) -> None:
        if self.closed.is_set():
            raise Stopped


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[1].startswith("Z")


def grandchild(pid_file: Path) -> list[str]:
    """A shell that starts a `sleep` in the background, writes its pid, and waits."""
    return ["sh", "-c", f"sleep 600 & echo $! > {pid_file}; wait"]


def test_a_child_and_what_it_started_are_killed_when_the_fence_closes(tmp_path: Path) -> None:
    fence = Fence()
    pid_file = tmp_path / "pid"
    raised: list[BaseException] = []

    def step() -> None:
        with acting_under(fence):
            try:
                run_child(grandchild(pid_file), timeout=600)
            except BaseException as exc:
                raised.append(exc)

    thread = threading.Thread(target=step)
    thread.start()
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="sleep started")
    sleeper = int(pid_file.read_text())
    fence.closed.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [type(e) for e in raised] == [Stopped]
    # its pipe closes a moment before the kernel marks it dead (exit closes files first)
    wait_for(lambda: not alive(sleeper), timeout=5, what="the grandchild dead")
    assert live_children() == []


def test_a_child_past_its_time_is_killed_with_its_group_and_the_timeout_raised(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(grandchild(pid_file), timeout=0.5)
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the pid written")
    sleeper = int(pid_file.read_text())
    wait_for(lambda: not alive(sleeper), timeout=5, what="the grandchild dead")


def test_a_child_without_a_fence_runs_to_its_end_and_says_what_it_said() -> None:
    done = run_child(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    merged = run_child(["sh", "-c", "echo out; echo err >&2"], timeout=30, merge_stderr=True)
    assert sorted(merged.stdout.split()) == ["err", "out"] and merged.stderr == ""


def test_a_missing_program_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        run_child(["/nonexistent/pg_restore"], timeout=5)
    assert live_children() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_the_bot_that_started_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    program = (
        "import sys, threading\n"
        "from actions.children import run_child\n"
        f"argv = ['sh', '-c', 'echo $$ > {pid_file}; exec sleep 600']\n"
        "threading.Thread(target=run_child, args=(argv,), kwargs={'timeout': 600}).start()\n"
        "threading.Event().wait()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pid = 0
    try:
        with started([sys.executable, "-c", program], cwd=ROOT, env=env) as bot:
            wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="a child")
            pid = int(pid_file.read_text())
            assert alive(pid)
            bot.kill()  # SIGKILL: nothing of the bot's own code runs any more
            bot.wait(timeout=30)
            wait_for(lambda: not alive(pid), timeout=10, what="the child gone with the bot")
    finally:
        if pid and alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_long_child_says_how_long_it_runs_and_what_its_watch_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(voice, "SAY_SECONDS", 0.2)
    said: list[str] = []
    with voice.speaking_to(said.append):
        done = run_child(["sleep", "1"], timeout=30, watch=lambda: "3.1 MB in app_recovery so far")
    assert done.returncode == 0
    assert len(said) >= 2, said
    assert all(
        re.fullmatch(r"sleep still running after \d+ s: 3\.1 MB in app_recovery so far", line)
        for line in said
    ), said


def test_a_watch_that_fails_is_said_and_the_child_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice, "SAY_SECONDS", 0.2)
    said: list[str] = []

    def broken() -> str:
        raise RuntimeError("the database went away")

    with voice.speaking_to(said.append):
        done = run_child(["sleep", "0.6"], timeout=30, watch=broken)
    assert done.returncode == 0
    assert said and all(
        line.endswith("(its progress could not be read: RuntimeError)") for line in said
    ), said


def test_a_child_outside_a_step_says_nothing_and_a_quick_one_never_speaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(voice, "SAY_SECONDS", 0.2)
    assert run_child(["sleep", "0.5"], timeout=30).returncode == 0  # no step: nobody to tell
    said: list[str] = []
    with voice.speaking_to(said.append):
        assert run_child(["true"], timeout=30).returncode == 0
    assert said == []
