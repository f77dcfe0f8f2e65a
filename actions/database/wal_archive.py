"""What a WAL archive holds: its base backups and the window it can recover to.

- The window offered is the real one: from the earliest base backup's stop time (rounded
  up to the next second: the history file gives whole seconds, and PostgreSQL refuses a
  target before the backup is consistent) to the last commit in the archive (read with
  `pg_waldump` from the newest segments: a later target is never reached, and PostgreSQL 15
  stops with "recovery ended before configured recovery target was reached").
- A base backup whose `.backup` history file is not in the archive has no known stop time
  and is not offered; tar-format base backups are not read (plain format only).
- pgBackRest's window comes from `pgbackrest info` and the commits in the newest segments
  it hands back with `archive-get`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actions.base import PlanningError
from actions.database.names import iso
from actions.database.params import PgBackRest, WalArchive
from actions.database.pgtools import run_tool
from actions.database.scratch import as_user, bindir

SEGMENT = re.compile(r"[0-9A-F]{24}")
COMMIT = re.compile(r"desc: COMMIT(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


@dataclass(frozen=True)
class BaseBackup:
    """One base backup and the first second from which it can be recovered."""

    ref: str
    started: datetime
    usable_from: datetime


def label_fields(text: str) -> dict[str, str]:
    """Parse a backup_label or backup history file (`KEY: value` lines)."""
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if value
    )


def label_time(value: str) -> datetime:
    """Parse the `2026-11-28 02:53:38 UTC` of a backup label."""
    stamp, _, zone = value.rpartition(" ")
    if zone != "UTC":
        raise PlanningError(f"backup label time {value!r} is not in UTC")
    return datetime.strptime(f"{stamp} +0000", "%Y-%m-%d %H:%M:%S %z")


def archive_backups(archive: WalArchive) -> list[BaseBackup]:
    """List the plain-format base backups whose stop time the archive records, oldest first."""
    found = []
    directory = Path(archive.base_backups)
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():
        label = path / "backup_label"
        if not label.is_file():
            continue
        fields = label_fields(label.read_text())
        start = fields.get("START WAL LOCATION", "")
        history = _history(Path(archive.wal_archive), start)
        if history is None:
            continue
        stop = label_time(history["STOP TIME"]) + timedelta(seconds=1)
        found.append(BaseBackup(str(path), label_time(fields["START TIME"]), stop))
    return sorted(found, key=lambda b: b.usable_from)


def _history(wal: Path, start: str) -> dict[str, str] | None:
    segment = re.search(r"\(file ([0-9A-F]{24})\)", start)
    if segment is None:
        return None
    for path in wal.glob(f"{segment.group(1)}.*.backup"):
        fields = label_fields(path.read_text())
        if fields.get("START WAL LOCATION") == start and "STOP TIME" in fields:
            return fields
    return None


def commit_times(segment: Path, bindir: Path) -> list[datetime]:
    """Return the commit times recorded in one WAL segment (pg_waldump, times in UTC)."""
    run = run_tool(
        [str(bindir / "pg_waldump"), str(segment)], conn=None, timeout=120, env={"TZ": "UTC"}
    )
    return [
        datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
        for match in COMMIT.finditer(run.stdout)
    ]


def last_commit(segments: list[Path], bindir: Path, *, scan: int = 16) -> datetime | None:
    """Return the last commit time in the newest segments (up to `scan` of them)."""
    for segment in sorted(segments, key=lambda p: p.name, reverse=True)[:scan]:
        times = commit_times(segment, bindir)
        if times:
            return max(times)
    return None


def archive_window(archive: WalArchive) -> tuple[datetime, datetime]:
    """Return (earliest, latest) times PostgreSQL can recover to from this archive."""
    backups = archive_backups(archive)
    if not backups:
        raise PlanningError(
            f"no plain-format base backup in {archive.base_backups} has its .backup history "
            f"file (with its stop time) in {archive.wal_archive}"
        )
    wal = Path(archive.wal_archive)
    segments = [p for p in wal.iterdir() if SEGMENT.fullmatch(p.name)] if wal.is_dir() else []
    latest = last_commit(segments, bindir(archive))
    if latest is None:
        raise PlanningError(f"no commit found in the newest WAL segments of {wal}")
    if latest < backups[0].usable_from:
        raise PlanningError(
            f"the last archived commit ({iso(latest)}) is before the first base backup is "
            f"usable ({iso(backups[0].usable_from)})"
        )
    return backups[0].usable_from, latest


def pgbackrest_args(source: PgBackRest) -> list[str]:
    """Return the options every pgbackrest command gets."""
    config = [f"--config={source.config}"] if source.config else []
    return ["pgbackrest", *config, f"--stanza={source.stanza}"]


def pgbackrest_info(source: PgBackRest) -> dict[str, Any]:
    """Read `pgbackrest info --output=json` for the stanza."""
    run = run_tool(
        as_user(source, [*pgbackrest_args(source), "--output=json", "info"]),
        conn=None,
        timeout=120,
    )
    if run.returncode != 0:
        raise PlanningError(f"pgbackrest info failed: {run.tail() or run.stdout[-500:]}")
    stanzas = json.loads(run.stdout)
    if not stanzas:
        raise PlanningError(f"pgbackrest knows no stanza {source.stanza}")
    return dict(stanzas[0])


def pgbackrest_window(source: PgBackRest) -> tuple[datetime, datetime] | None:
    """Return (earliest, latest): first backup's stop (next second) to the last commit."""
    info = pgbackrest_info(source)
    backups = info.get("backup") or []
    archives = [a for a in info.get("archive") or [] if a.get("max")]
    if not backups or not archives:
        return None
    earliest = datetime.fromtimestamp(min(b["timestamp"]["stop"] for b in backups) + 1, tz=UTC)
    with tempfile.TemporaryDirectory(prefix="rollback-bot-wal-") as tmp:
        os.chmod(tmp, 0o777)  # noqa: S103 (a scratch directory pgBackRest's user writes to)
        latest = None
        newest = archives[-1]["max"]
        for segment in _previous_segments(newest, 16):
            target = Path(tmp) / segment
            run = run_tool(
                as_user(source, [*pgbackrest_args(source), "archive-get", segment, str(target)]),
                conn=None,
                timeout=120,
            )
            if run.returncode == 0 and target.exists():
                times = commit_times(target, bindir(source))
                if times:
                    latest = max(times)
                    break
    if latest is None or latest < earliest:
        return None
    return earliest, latest


def _previous_segments(newest: str, count: int) -> list[str]:
    """Name `newest` and the segments before it on its timeline (16 MB segments)."""
    timeline, log, seg = newest[:8], int(newest[8:16], 16), int(newest[16:], 16)
    names = []
    for _ in range(count):
        names.append(f"{timeline}{log:08X}{seg:08X}")
        if seg == 0:
            if log == 0:
                break
            log, seg = log - 1, 0xFF
        else:
            seg -= 1
    return names


def choose_base(archive: WalArchive, moment: datetime) -> BaseBackup:
    """Return the newest base backup usable for `moment`."""
    usable = [b for b in archive_backups(archive) if b.usable_from <= moment]
    if not usable:
        raise PlanningError(f"no base backup in {archive.base_backups} ends before {iso(moment)}")
    return usable[-1]
