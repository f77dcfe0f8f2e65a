"""Configuration restored exactly as it was, on real files: modes, owners, times, links, mounts.

Each test builds a real directory, backs it up with the bot's own step, changes
it, and restores it; the comparison covers every entry's type, mode, owner,
mtime (tar keeps whole seconds), content and link target. The mount-point test
mounts a tmpfs over the live directory (as root), as a ConfigMap or container
volume is mounted; renaming such a directory fails with EBUSY.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions.base import PermanentError, PlanningError, StepContext
from actions.configfiles import (
    PRE_BACKUP_KEY,
    BackupConfig,
    ConfigFilesParams,
    ConfigFilesTarget,
    RestartApp,
    RestoreConfig,
    backup_name,
    restore_key,
)
from actions.configfiles import archives as archives_module
from bot.domain.plans import default_point
from tests.fakes.parts import unavailable

OLD = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
OLDER = datetime(2023, 12, 31, 9, 30, 0, tzinfo=UTC)
ROOT = os.geteuid() == 0


class Crash(Exception):
    """The bot dying at one point of a step."""


def make_params(live: Path, backups: Path, **overrides: Any) -> ConfigFilesParams:
    """Return config-files params for `live` backed up to `backups`."""
    return ConfigFilesParams(kind="config", directory=str(live), backups=str(backups), **overrides)


def run(step: Any, ctx: StepContext | None = None) -> Any:
    """Run `step` with a fresh context unless one is given."""
    return step.run(ctx or StepContext.for_test(timeout=step.timeout))


def tree(directory: Path) -> dict[str, tuple[Any, ...]]:
    """Return every entry under `directory` (itself as '.') with type, mode, owner, mtime, data."""
    found = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            data: Any = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            data = ("dir",)
        else:
            data = ("file", path.read_bytes())
        name = "." if path == directory else str(path.relative_to(directory))
        mtime = None if stat.S_ISLNK(info.st_mode) else info.st_mtime_ns
        found[name] = (*data, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, mtime)
    return found


def fill(directory: Path) -> None:
    """Write a configuration with unusual modes, a symlink, and whole-second mtimes."""
    secrets = directory / "secrets"
    secrets.mkdir()
    (secrets / "db.password").write_text("hunter2\n")
    (directory / "app.conf").write_text("pool=20\n")
    (directory / "signing.key").write_text("-----KEY-----\n")
    (directory / "current.conf").symlink_to("app.conf")
    (directory / "secret-link").symlink_to("secrets/db.password")
    (directory / "app.conf").chmod(0o660)
    (directory / "signing.key").chmod(0o400)
    (secrets / "db.password").chmod(0o600)
    secrets.chmod(0o700)
    directory.chmod(0o750)
    if ROOT:
        os.chown(directory / "app.conf", 4242, 4343)
        os.chown(secrets, 4242, 4242, follow_symlinks=False)
    for n, path in enumerate(
        [
            secrets / "db.password",
            directory / "app.conf",
            directory / "signing.key",
            secrets,
            directory,
        ]
    ):
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))


def spoil(directory: Path) -> None:
    """Change what a bad deploy would change: contents, modes, a link, an extra file."""
    (directory / "app.conf").chmod(0o644)
    (directory / "app.conf").write_text("pool=500\n")
    (directory / "current.conf").unlink()
    (directory / "current.conf").write_text("not a link any more\n")
    (directory / "secrets").chmod(0o755)
    (directory / "new.flags").write_text("checkout=on\n")
    directory.chmod(0o755)


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    """An empty backup directory."""
    directory = tmp_path / "backups"
    directory.mkdir()
    return directory


def back_up(live: Path, backups: Path, ctx: StepContext) -> str:
    """Back up `live` with the bot's step; return the archive's name."""
    result = run(BackupConfig(make_params(live, backups), restoring=backup_name(OLD)), ctx)
    return str(result.data["backup"])


def test_modes_owners_times_and_symlinks_are_restored_exactly(
    tmp_path: Path, backups: Path
) -> None:
    live = tmp_path / "config"
    live.mkdir()
    fill(live)
    before = tree(live)
    name = back_up(live, backups, StepContext.for_test())
    spoil(live)
    assert tree(live) != before
    run(RestoreConfig(make_params(live, backups), backup=name))
    assert tree(live) == before
    assert before["signing.key"][-4] == 0o400 and before["app.conf"][-4] == 0o660
    assert before["secrets"][-4] == 0o700 and before["current.conf"][:2] == ("link", "app.conf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "config"]


# --- a mount point -------------------------------------------------------------------------


@pytest.fixture(params=["tmpfs", "bind"])
def mounted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Mount a tmpfs, or bind-mount a directory of the same filesystem, at tmp_path/config.

    A same-filesystem bind mount has its parent's device, so `os.path.ismount` misses it.
    """
    live = tmp_path / "config"
    live.mkdir()
    if request.param == "tmpfs":
        argv = ["mount", "-t", "tmpfs", "-o", "size=8m", f"rbt-{uuid.uuid4().hex[:6]}", str(live)]
    else:
        (tmp_path / "volume").mkdir()
        argv = ["mount", "--bind", str(tmp_path / "volume"), str(live)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"mounting is not permitted here ({done.stderr.strip()}): run the tests as root"
        unavailable(reason)
    try:
        yield live
    finally:
        subprocess.run(["umount", str(live)], check=True)


def test_mount_point_is_restored_in_place(mounted: Path, backups: Path) -> None:
    (mounted / ".rollback-new-deadbeef").mkdir()
    fill(mounted)
    before = {k: v for k, v in tree(mounted).items() if not k.startswith(".rollback-")}
    device = mounted.stat().st_dev
    name = back_up(mounted, backups, StepContext.for_test())
    with tarfile.open(backups / name) as archive:
        assert not [n for n in archive.getnames() if ".rollback-" in n]
    spoil(mounted)
    with pytest.raises(OSError, match="Device or resource busy"):
        os.rename(mounted, mounted.parent / "moved")
    result = run(RestoreConfig(make_params(mounted, backups), backup=name))
    assert result.data["in_place"] is True
    assert archives_module.is_mount_point(mounted) and mounted.stat().st_dev == device
    assert tree(mounted) == before
    assert sorted(p.name for p in mounted.parent.iterdir() if p.name != "volume") == [
        "backups",
        "config",
    ]


@pytest.mark.parametrize("crash_at", [1, 3, 6])
def test_mount_point_swap_interrupted_is_finished_by_the_restored_step(
    crash_at: int, mounted: Path, backups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(mounted)
    before = tree(mounted)
    name = back_up(mounted, backups, StepContext.for_test())
    spoil(mounted)
    target = ConfigFilesTarget(make_params(mounted, backups))
    step = RestoreConfig(target.params, backup=name)
    ctx = StepContext.for_test()
    renames = crash_renames(monkeypatch, at=crash_at)
    with pytest.raises(Crash):
        run(step, ctx)
    monkeypatch.setattr(archives_module.os, "rename", renames.real)
    assert ctx.memory[restore_key(target.params)]["phase"] == "swapping"
    run(target.restore(step.name, step.spec()), ctx)
    assert tree(mounted) == before
    again = run(target.restore(step.name, step.spec()), ctx)
    assert again.skipped and again.summary.startswith("already restored")


class Renames:
    """os.rename that raises Crash on its `at`-th call."""

    def __init__(self, at: int) -> None:
        self.real = os.rename
        self.at = at
        self.calls = 0

    def __call__(self, src: Any, dst: Any) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise Crash(f"crash at rename {self.at}: {src} -> {dst}")
        self.real(src, dst)


def crash_renames(monkeypatch: pytest.MonkeyPatch, *, at: int) -> Renames:
    """Make the `at`-th os.rename of the swap raise Crash."""
    renames = Renames(at)
    monkeypatch.setattr(archives_module.os, "rename", renames)
    return renames


@pytest.mark.parametrize("crash_at", [1, 2])
def test_directory_swap_interrupted_is_finished_by_the_restored_step(
    crash_at: int, tmp_path: Path, backups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "config"
    live.mkdir()
    fill(live)
    before = tree(live)
    name = back_up(live, backups, StepContext.for_test())
    spoil(live)
    target = ConfigFilesTarget(make_params(live, backups))
    step = RestoreConfig(target.params, backup=name)
    ctx = StepContext.for_test()
    renames = crash_renames(monkeypatch, at=crash_at)
    with pytest.raises(Crash):
        run(step, ctx)
    monkeypatch.setattr(archives_module.os, "rename", renames.real)
    run(target.restore(step.name, step.spec()), ctx)
    assert tree(live) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "config"]


# --- rollback points -------------------------------------------------------------------


def archive_of(files: dict[str, str]) -> bytes:
    """Build a backup archive of `files` the way `tar -C dir .` names members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            info = tarfile.TarInfo(f"./{path}")
            info.size, info.mode = len(text.encode()), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


def test_default_point_after_a_rollback_is_never_the_pre_rollback_backup(
    tmp_path: Path, backups: Path
) -> None:
    live = tmp_path / "config"
    live.mkdir()
    (live / "app.yaml").write_text("version: 3\n")
    (backups / backup_name(OLD)).write_bytes(archive_of({"app.yaml": "version: 2\n"}))
    (backups / backup_name(OLDER)).write_bytes(archive_of({"app.yaml": "version: 1\n"}))
    target = ConfigFilesTarget(make_params(live, backups, restart_command=["true"]))
    plan = target.plan(None)
    ctx = StepContext.for_test()
    for step in (*plan.prepare, *plan.rollback):
        run(target.restore(step.name, step.spec()), ctx)
    assert (live / "app.yaml").read_text() == "version: 2\n"
    pre = ctx.memory[PRE_BACKUP_KEY]
    assert pre.endswith(".before-20240101_120000.tar.gz")
    points = target.points()
    assert [p.ref for p in points] == [pre, backup_name(OLD), backup_name(OLDER)]
    assert points[0].label.startswith("undo the last rollback: ") and points[0].avoid
    assert points[1].is_current and "live now" in points[1].label
    chosen = default_point(points)
    assert chosen is not None and chosen.ref == backup_name(OLDER)
    assert target.plan(None).rollback[0].describe().count(backup_name(OLDER)) == 1
    undo = target.plan(pre)
    run(undo.rollback[0])
    assert (live / "app.yaml").read_text() == "version: 3\n"


# --- limits ------------------------------------------------------------------------------


class Zeros(io.RawIOBase):
    """`size` zero bytes, read without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_bomb_archive_is_refused_when_the_plan_is_built(tmp_path: Path, backups: Path) -> None:
    live = tmp_path / "config"
    live.mkdir()
    (live / "app.yaml").write_text("version: 3\n")
    name = backup_name(OLD)
    with tarfile.open(backups / name, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("./huge.conf")
        info.size = 256 * 2**20
        tar.addfile(info, io.BufferedReader(Zeros(info.size)))
    assert (backups / name).stat().st_size < 300 * 1024
    target = ConfigFilesTarget(make_params(live, backups))
    assert not target.checks(None)[-1].ok
    with pytest.raises(PlanningError, match=r"expands past the limit of 64\.0 MiB: refused"):
        target.plan(None)
    with pytest.raises(PermanentError, match="refused"):
        run(RestoreConfig(target.params, backup=name))
    assert sorted(p.name for p in live.iterdir()) == ["app.yaml"]


def test_archive_over_the_member_limit_is_refused_when_the_plan_is_built(
    tmp_path: Path, backups: Path
) -> None:
    live = tmp_path / "config"
    live.mkdir()
    files = {f"f{n}.conf": "x\n" for n in range(5)}
    (backups / backup_name(OLD)).write_bytes(archive_of(files))
    target = ConfigFilesTarget(make_params(live, backups, max_members=3))
    with pytest.raises(PlanningError, match="more than 3 members"):
        target.plan(None)
    assert ConfigFilesTarget(make_params(live, backups, max_members=5)).plan(None).rollback


# --- resume of the other steps ---------------------------------------------------------------


def test_restart_already_done_is_not_run_again_on_resume(tmp_path: Path, backups: Path) -> None:
    live = tmp_path / "config"
    live.mkdir()
    log = tmp_path / "restarts.log"
    command = ["sh", "-c", f"echo restarted >> {log}"]
    target = ConfigFilesTarget(make_params(live, backups, restart_command=command))
    step = RestartApp(target.params)
    ctx = StepContext.for_test()
    run(step, ctx)
    again = run(target.restore(step.name, step.spec()), ctx)
    assert "already restarted" in again.output
    assert log.read_text() == "restarted\n"
    with pytest.raises(PlanningError, match=r"no step 'configfiles\.nope'"):
        target.restore("configfiles.nope", {})


def test_backup_already_taken_is_reused_on_resume(tmp_path: Path, backups: Path) -> None:
    live = tmp_path / "config"
    live.mkdir()
    (live / "app.yaml").write_text("version: 3\n")
    target = ConfigFilesTarget(make_params(live, backups))
    step = BackupConfig(target.params, restoring=backup_name(OLD))
    ctx = StepContext.for_test()
    first = run(step, ctx)
    again = run(target.restore(step.name, step.spec()), ctx)
    assert again.skipped and again.summary == f"already backed up as {first.data['backup']}"
    assert len(list(backups.iterdir())) == 1
