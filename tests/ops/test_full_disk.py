"""Readiness with SQLite's filesystem really full: a 2 MiB tmpfs the test fills and frees.

Mounting needs root (CAP_SYS_ADMIN). Locally, without it, the test is skipped and says why;
in CI (`CI=true`, where the suite runs as root) a missing capability fails the test, so the
check cannot silently stop running. The filesystem is unmounted in every outcome.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import parse_config
from bot.execution.planner import Planner
from sandbox.harness import Sandbox
from tests.fakes.config import DAVE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget
from tests.fakes.thread import settled
from tests.fakes.waiting import wait_for

SIZE = "2m"


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[Path]:
    """Mount a `SIZE` tmpfs at `where`; unmount it afterwards, whatever happened."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        why = f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # busy: detach it now


def fill(path: Path) -> None:
    """Write `path` until the filesystem has no byte left."""
    with path.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def readyz(sandbox: Sandbox) -> httpx.Response:
    return httpx.get(sandbox.platform.bot_url.replace("/slack/events", "/readyz"), timeout=30)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a tmpfs needs root; CI runs this test as root")
    with small_filesystem(tmp_path / "small") as where:
        yield where


def test_readiness_fails_while_the_sqlite_filesystem_is_full_and_recovers_when_freed(
    mounted: Path, script: Path
) -> None:
    sandbox = Sandbox(
        config=parse_config(config_dict(), path=Path("test.yml")),
        workdir=mounted,
        people=PEOPLE,
        planner=Planner(factory=lambda params: ScriptedTarget(script)),
        groups={"SDBAS00001": [DAVE]},
        runner_poll_seconds=0.1,
    ).start()
    ballast = mounted / "ballast"
    try:
        wait_for(lambda: readyz(sandbox).status_code == 200, what="ready")
        fill(ballast)
        not_ready = readyz(sandbox)
        assert not_ready.status_code == 503
        problems = not_ready.json()["problems"]
        assert any("disk is full" in p for p in problems), problems
        ballast.unlink()
        wait_for(lambda: readyz(sandbox).status_code == 200, what="ready again once freed")
    finally:
        ballast.unlink(missing_ok=True)
        settled(sandbox)
        sandbox.stop()
