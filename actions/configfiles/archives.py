"""Archive safety: check a tar.gz whole before anything changes, then extract and swap.

The procedures' script empties the live directory and untars over it, so a
bad archive leaves it half-written. Here every archive is checked whole before
anything changes (gzip CRC, tar headers, and each member: no absolute paths,
no `..`, no links leading out, no device files), then extracted into a sibling
directory and renamed into place. A failure while extracting removes the
sibling and leaves the live directory as it was; the swap itself is two
renames on one filesystem, undone if the second fails.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path

from actions.base import PermanentError


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Say why extracting `member` could write outside its directory, or None if it cannot."""
    if member.name.startswith("/"):
        return "absolute path"
    if ".." in member.name.split("/"):
        return "'..' in its path"
    if member.isdev():
        return "device file or FIFO"
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        base = posixpath.dirname(member.name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            return f"{kind} to {member.linkname} leaves the directory"
    elif not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


def verify_archive(path: Path, *, label: str) -> int:
    """Check that `path` is a whole, safe tar.gz; return its member count."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise PermanentError(f"{label} is not a readable tar.gz: {exc}") from exc
    for member in members:
        reason = unsafe_reason(member)
        if reason is not None:
            raise PermanentError(f"{label}: refusing member {member.name!r}: {reason}")
    return len(members)


def make_archive(directory: Path, dest: Path) -> None:
    """Write `directory`'s contents to `dest` as tar.gz, members named `./...` like `tar -C`."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(directory, arcname=".")


def _keep_owner(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Apply tarfile's `data` filter but keep recorded owners (applied only when root)."""
    safe = tarfile.data_filter(member, dest)
    if safe is None:
        return None
    return safe.replace(
        uid=member.uid, gid=member.gid, uname=member.uname, gname=member.gname, deep=False
    )


def restore_directory(archive: Path, live: Path) -> None:
    """Extract a verified `archive` beside `live`, then swap it in; `live` is untouched on error."""
    _sweep(live, "restore")
    staging = Path(tempfile.mkdtemp(dir=live.parent, prefix=f".{live.name}.restore-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter=_keep_owner)
        _copy_directory_attributes(live, staging)
        _swap(staging, live)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PermanentError(
            f"restore of {live} from {archive.name} failed: {exc}; {live} is unchanged"
        ) from exc
    _sweep(live, "old")


def _copy_directory_attributes(live: Path, staging: Path) -> None:
    if not live.exists():
        staging.chmod(0o755)
        return
    info = live.stat()
    staging.chmod(info.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(staging, info.st_uid, info.st_gid)


def _swap(staging: Path, live: Path) -> None:
    old = live.parent / f".{live.name}.old-{uuid.uuid4().hex[:8]}"
    if live.exists():
        os.rename(live, old)
    try:
        os.rename(staging, live)
    except OSError:
        if old.exists():
            os.rename(old, live)
        raise


def _sweep(live: Path, kind: str) -> None:
    """Remove siblings a crashed or finished restore left (`.<name>.<kind>-*`)."""
    for leftover in live.parent.glob(f".{live.name}.{kind}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
