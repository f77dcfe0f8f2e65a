"""Configuration archives and a live directory with its backups, for the config-files target
(`live` and `backups` are fixtures: modules load this as a plugin).

Imported by test modules before pytest loads it as their plugin: PYTEST_DONT_REWRITE."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actions.configfiles import ConfigFilesParams, backup_name

OLD = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


OLDER = datetime(2023, 12, 31, 9, 30, 0, tzinfo=UTC)


Member = tuple[tarfile.TarInfo, bytes | None]


def tar_gz(entries: Sequence[Member]) -> bytes:
    """Build a tar.gz from explicit members (data None for non-files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, text: str) -> Member:
    """Return a regular file member."""
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, text.encode()


def config_archive(files: dict[str, str]) -> bytes:
    """Build a backup archive of `files` the way `tar -C dir .` names members."""
    return tar_gz([file_member(f"./{path}", text) for path, text in files.items()])


@pytest.fixture
def live(tmp_path: Path) -> Path:
    """A live configuration directory with the current (bad) configuration."""
    directory = tmp_path / "app" / "config"
    (directory / "sub").mkdir(parents=True)
    (directory / "app.yaml").write_text("version: 3\n")
    (directory / "sub" / "db.conf").write_text("pool=50\n")
    (directory / "feature.flags").write_text("new_checkout=on\n")
    return directory


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    """A local backup directory holding two older backups and an unrelated file."""
    directory = tmp_path / "backups"
    directory.mkdir()
    good = {"app.yaml": "version: 2\n", "sub/db.conf": "pool=20\n"}
    (directory / backup_name(OLD)).write_bytes(config_archive(good))
    (directory / backup_name(OLDER)).write_bytes(config_archive({"app.yaml": "version: 1\n"}))
    (directory / "notes.txt").write_text("not a backup")
    return directory


def make_params(live: Path, backups: str, **overrides: Any) -> ConfigFilesParams:
    """Return config-files params for `live` backed up to `backups`."""
    return ConfigFilesParams(kind="config", directory=str(live), backups=backups, **overrides)
