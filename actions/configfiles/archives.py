"""Archive safety and an exact restore: check a tar.gz whole, then extract and swap it in.

The procedures' script empties the live directory and untars over it, so a
bad archive leaves it half-written. Here every archive is checked whole when
the plan is built and again before anything changes: gzip CRC, tar headers,
limits on member count and expanded size (read as a stream, so a bomb is
refused without being expanded), and each member: no absolute paths, no
`..`, no links leading out, no path through a symlink (a link to `.` would let
a later link's `..` leave the tree), no devices or FIFOs, no set-user/group-ID
bits.

Once checked, members are extracted exactly as recorded (tarfile's
`fully_trusted` filter): modes such as 0400/0660 and 0700 directories,
timestamps, symlinks inside the tree, and numeric owners when running as root
(tarfile only calls chown as root). The `data` filter is not used because it
rewrites modes (adds owner rw, clears group/other write) and drops owners;
its safety rules are enforced by `unsafe_reason` instead.

Swapping in: the archive is extracted into a sibling of the live directory
and the two are swapped with renames (`swap_directory`). A live directory
that is a mount point (a ConfigMap or container volume) cannot be renamed
(EBUSY), so its contents are swapped instead (`swap_contents`): extracted
into a staging directory inside it, then entry by entry the old one is moved
aside and the new one renamed in, and the old ones are removed last. Both
record their paths in the caller's journal first, so a crash half-way can be
finished (`resume_directory`, `resume_contents`).
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from actions.base import PermanentError

NEW, OLD = ".rollback-new-", ".rollback-old-"


@dataclass(frozen=True)
class Limits:
    """The most members and expanded bytes an archive may hold."""

    max_members: int
    max_bytes: int


def unsafe_reason(member: tarfile.TarInfo, links: set[str]) -> str | None:
    """Say why extracting `member` is unsafe, or None; `links` are earlier symlinks' names."""
    name = posixpath.normpath(member.name)
    if member.name.startswith("/"):
        return "absolute path"
    if ".." in member.name.split("/"):
        return "'..' in its path"
    parts = name.split("/")
    through = ["/".join(parts[:i]) for i in range(1, len(parts))]
    if any(p in links for p in through):
        return "path goes through a symlink in the archive"
    if member.isdev():
        return "device file or FIFO"
    if member.mode & (stat.S_ISUID | stat.S_ISGID) and not member.isdir():
        return "set-user-ID or set-group-ID bit"
    if member.issym() or member.islnk():
        return _link_reason(member, name)
    if not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


def _link_reason(member: tarfile.TarInfo, name: str) -> str | None:
    kind = "symlink" if member.issym() else "hard link"
    base = posixpath.dirname(name) if member.issym() else ""
    target = posixpath.normpath(posixpath.join(base, member.linkname))
    if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
        return f"{kind} to {member.linkname} leaves the directory"
    return None


def verify_archive(path: Path, *, label: str, limits: Limits) -> int:
    """Check that `path` is a whole, safe tar.gz within `limits`; return its member count."""
    try:
        _read_stream(path, label=label, limits=limits)
        return _check_members(path, label=label, limits=limits)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise PermanentError(f"{label} is not a readable tar.gz: {exc}") from exc


def _read_stream(path: Path, *, label: str, limits: Limits) -> None:
    """Read the whole gzip stream (CRC), stopping as soon as it is over the limit."""
    ceiling = limits.max_bytes + 512 * (2 * limits.max_members + 2) + 10240
    seen = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            seen += len(chunk)
            if seen > ceiling:
                raise PermanentError(
                    f"{label} expands past the limit of {_mib(limits.max_bytes)}: refused"
                )


def _check_members(path: Path, *, label: str, limits: Limits) -> int:
    count, total, links = 0, 0, set[str]()
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            count += 1
            if count > limits.max_members:
                raise PermanentError(f"{label} has more than {limits.max_members} members: refused")
            total += member.size if member.isfile() else 0
            if total > limits.max_bytes:
                raise PermanentError(
                    f"{label} expands past the limit of {_mib(limits.max_bytes)}: refused"
                )
            reason = unsafe_reason(member, links)
            if reason is not None:
                raise PermanentError(f"{label}: refusing member {member.name!r}: {reason}")
            if member.issym():
                links.add(posixpath.normpath(member.name))
    return count


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def make_archive(directory: Path, dest: Path) -> None:
    """Write `directory`'s contents to `dest` as tar.gz, members named `./...` like `tar -C`.

    A restore's own staging inside a mount point (`.rollback-new-*`, `.rollback-old-*`,
    left by a crash) is not configuration and is left out.
    """
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(directory, arcname=".", filter=_not_staging)


def _not_staging(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    top = member.name.split("/")[1] if member.name.startswith("./") else ""
    return None if top.startswith((NEW, OLD)) else member


def extract(archive: Path, dest: Path) -> None:
    """Extract a verified `archive` into `dest` exactly: modes, times, links, owners as root."""
    with tarfile.open(archive, "r:gz") as tar:
        # fully trusted: the bot made this archive itself and verified its checksum
        tar.extractall(dest, filter="fully_trusted", numeric_owner=True)  # noqa: S202


# --- swapping a directory -------------------------------------------------------------


MOUNTINFO = Path("/proc/self/mountinfo")


def is_mount_point(path: Path) -> bool:
    """Say whether `path` is a mount point (renaming it gives EBUSY).

    `os.path.ismount` compares devices with the parent, which misses a bind mount
    from the same filesystem (a container volume often is one), so the kernel's own
    list is read too: field 5 of /proc/self/mountinfo is the mount point, with
    space, tab, newline and backslash escaped in octal (proc(5)).
    """
    if not path.is_dir():
        return False
    if os.path.ismount(path):
        return True
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return False
    real = os.path.realpath(path)
    return any(_unescape(line.split(" ")[4]) == real for line in lines if line.count(" ") >= 4)


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def staging_for(live: Path, *, in_place: bool) -> tuple[Path, Path]:
    """Return fresh (new, old) paths: beside `live`, or inside it when it is a mount point."""
    tag = uuid.uuid4().hex[:8]
    base = live if in_place else live.parent
    prefix = "" if in_place else f".{live.name}"
    return base / f"{prefix}{NEW}{tag}", base / f"{prefix}{OLD}{tag}"


def prepare_staging(live: Path, new: Path) -> None:
    """Create `new` with the live directory's mode and owner (the archive's `.` overrides)."""
    new.mkdir(mode=0o700)
    if live.exists():
        info = live.stat()
        new.chmod(stat.S_IMODE(info.st_mode))
        if os.geteuid() == 0:
            os.chown(new, info.st_uid, info.st_gid)


def swap_directory(live: Path, new: Path, old: Path) -> None:
    """Swap `new` in for `live` with two renames, undoing the first if the second fails."""
    if live.exists():
        os.rename(live, old)
    try:
        os.rename(new, live)
    except OSError:
        if old.exists() and not live.exists():
            os.rename(old, live)
        raise
    shutil.rmtree(old, ignore_errors=True)


def swap_contents(
    live: Path, new: Path, old: Path, *, incoming: list[str], attrs: dict[str, int]
) -> None:
    """Rename `new`'s entries into `live` one by one, old ones aside first, removed last.

    `incoming` are the names extracted into `new` and `attrs` its mode, owner and mtime,
    both taken before any rename (which changes its mtime) and kept in the journal, so a
    resumed swap knows an entry already renamed in from one never extracted.
    """
    old.mkdir(mode=0o700, exist_ok=True)
    for name in incoming:
        if not os.path.lexists(new / name):
            continue
        if os.path.lexists(live / name):
            os.rename(live / name, old / name)
        os.rename(new / name, live / name)
    for name in sorted(os.listdir(live)):
        if name not in incoming and not name.startswith((NEW, OLD)):
            os.rename(live / name, old / name)
    shutil.rmtree(old)
    os.rmdir(new)
    apply_attrs(live, attrs)


def resume_contents(
    live: Path, new: Path, old: Path, *, incoming: list[str], attrs: dict[str, int]
) -> None:
    """Finish a `swap_contents` that stopped part way (entries already moved stay moved)."""
    if not new.exists():
        shutil.rmtree(old, ignore_errors=True)
        apply_attrs(live, attrs)
        return
    swap_contents(live, new, old, incoming=incoming, attrs=attrs)


def resume_directory(live: Path, new: Path, old: Path) -> None:
    """Finish a `swap_directory` that stopped between or after its renames."""
    if new.exists():
        if live.exists() and not old.exists():
            swap_directory(live, new, old)
            return
        if not live.exists():
            os.rename(new, live)
    shutil.rmtree(old, ignore_errors=True)


def dir_attrs(path: Path) -> dict[str, int]:
    """Return a directory's mode, owner and mtime, as JSON for a journal."""
    info = path.stat()
    return {
        "mode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "mtime_ns": info.st_mtime_ns,
    }


def apply_attrs(path: Path, attrs: dict[str, int]) -> None:
    """Give `path` the mode, owner (as root) and mtime in `attrs`."""
    if os.geteuid() == 0:
        os.chown(path, attrs["uid"], attrs["gid"])
    path.chmod(attrs["mode"])
    os.utime(path, ns=(attrs["mtime_ns"], attrs["mtime_ns"]))


def sweep(live: Path, *, keep: set[Path]) -> None:
    """Remove staging a crashed restore left beside or inside `live`, except `keep`."""
    places = [live.parent.glob(f".{live.name}{NEW}*"), live.parent.glob(f".{live.name}{OLD}*")]
    if live.is_dir():
        places += [live.glob(f"{NEW}*"), live.glob(f"{OLD}*")]
    for found in (p for place in places for p in place):
        if found not in keep:
            shutil.rmtree(found, ignore_errors=True)
