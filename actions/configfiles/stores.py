"""Where configuration backups live: a local directory or an S3 prefix.

Backups keep the procedures' names, `config_backup_<YYYYmmdd_HHMMSS>.tar.gz`
(UTC), in a local directory or under an S3 prefix, and sort newest first by the
time in the name. The bot's own pre-rollback backups are named for what they
are and what replaced them, `config_backup_<time>.before-<restored time>.tar.gz`,
so the store itself records which backup is live after a rollback and which
archive undoes it, with no second file to keep in step. A store writes a backup
complete or not at all: locally under a temporary name and then renamed, on S3
checked against the size it should hold.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from actions.aws import aws_client, aws_errors
from actions.base import PermanentError
from actions.configfiles.params import ConfigFilesParams
from actions.params import AwsConnection

NAME_PATTERN = re.compile(r"^config_backup_(\d{8}_\d{6})(?:\.before-(\d{8}_\d{6}))?\.tar\.gz$")
TIME_FORMAT = "%Y%m%d_%H%M%S"


@dataclass(frozen=True)
class Backup:
    """One stored configuration archive."""

    name: str
    created_at: datetime
    size: int | None = None

    @property
    def restored(self) -> datetime | None:
        """For the bot's pre-rollback backup: the time of the backup restored after it."""
        return restored_time(self.name)


def backup_name(at: datetime, *, before: datetime | None = None) -> str:
    """Return the archive name for a backup taken at `at` (UTC); `before`: pre-rollback."""
    suffix = f".before-{before.astimezone(UTC):{TIME_FORMAT}}" if before is not None else ""
    return f"config_backup_{at.astimezone(UTC):{TIME_FORMAT}}{suffix}.tar.gz"


def backup_time(name: str) -> datetime | None:
    """Return the UTC time in a backup's name, or None if it is not a backup name."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), TIME_FORMAT).replace(tzinfo=UTC)


def restored_time(name: str) -> datetime | None:
    """Return the restored backup's time a pre-rollback backup's name carries, else None."""
    match = NAME_PATTERN.match(name)
    if match is None or match.group(2) is None:
        return None
    return datetime.strptime(match.group(2), TIME_FORMAT).replace(tzinfo=UTC)


def _newest_first(found: list[Backup]) -> list[Backup]:
    return sorted(found, key=lambda b: (b.created_at, b.name), reverse=True)


def _require_name(name: str) -> None:
    if backup_time(name) is None:
        raise PermanentError(f"{name!r} is not a backup name (config_backup_<time>.tar.gz)")


class BackupStore(Protocol):
    """Where configuration archives are kept."""

    def list(self) -> list[Backup]:
        """Return the backups, newest first."""
        ...

    def exists(self, name: str) -> bool:
        """Say whether backup `name` is stored."""
        ...

    def fetch(self, name: str, dest: Path) -> None:
        """Copy backup `name` to the local file `dest`."""
        ...

    def put(self, source: Path, name: str) -> None:
        """Store the local file `source` as backup `name`, complete or not at all."""
        ...

    def where(self, name: str) -> str:
        """Return where backup `name` lives, for people."""
        ...


class LocalBackups:
    """Backups in a local directory; writes land under a temporary name, then rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def list(self) -> list[Backup]:
        """Return the backups, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in os.scandir(self.directory):
            created = backup_time(entry.name)
            if created is not None and entry.is_file():
                found.append(Backup(entry.name, created, entry.stat().st_size))
        return _newest_first(found)

    def exists(self, name: str) -> bool:
        """Say whether backup `name` is stored."""
        return (self.directory / name).is_file()

    def fetch(self, name: str, dest: Path) -> None:
        """Copy backup `name` to `dest`."""
        _require_name(name)
        if not self.exists(name):
            raise PermanentError(f"backup {self.where(name)} not found")
        shutil.copyfile(self.directory / name, dest)

    def put(self, source: Path, name: str) -> None:
        """Copy `source` in beside its final name, then rename it into place."""
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.directory / f".{name}.part"
        shutil.copyfile(source, part)
        os.replace(part, self.directory / name)

    def where(self, name: str) -> str:
        """Return the backup's path."""
        return str(self.directory / name)


class S3Backups:
    """Backups under an S3 prefix (`s3://bucket/prefix`)."""

    def __init__(self, url: str, aws: AwsConnection) -> None:
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = aws_client(aws, "s3")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def list(self) -> list[Backup]:
        """Return the backups directly under the prefix, newest first."""
        start = self._key("")
        found = []
        with aws_errors(f"list {self.where('')}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(start) :]
                    created = backup_time(name)
                    if created is not None:
                        found.append(Backup(name, created, item["Size"]))
        return _newest_first(found)

    def exists(self, name: str) -> bool:
        """Say whether backup `name` is stored."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            with aws_errors(f"look up {self.where(name)}"):
                raise
        return True

    def fetch(self, name: str, dest: Path) -> None:
        """Download backup `name` to `dest`."""
        _require_name(name)
        if not self.exists(name):
            raise PermanentError(f"backup {self.where(name)} not found")
        with aws_errors(f"download {self.where(name)}"), dest.open("wb") as out:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
            shutil.copyfileobj(body, out)

    def put(self, source: Path, name: str) -> None:
        """Upload `source` and confirm S3 holds all of it."""
        size = source.stat().st_size
        with aws_errors(f"upload {self.where(name)}"), source.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=body)
            stored = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        if stored["ContentLength"] != size:
            raise PermanentError(f"{self.where(name)} holds {stored['ContentLength']} of {size} B")

    def where(self, name: str) -> str:
        """Return the backup's s3:// URL."""
        return f"s3://{self.bucket}/{self._key(name)}"


def backup_store(params: ConfigFilesParams) -> BackupStore:
    """Return the store `params.backups` names."""
    if params.backups.startswith("s3://"):
        return S3Backups(params.backups, params.aws)
    return LocalBackups(Path(params.backups))
