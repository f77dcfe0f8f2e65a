"""What the bot remembers about a target's versions: the last healthy one, those rolled away from.

Records only: the store reads and writes them (`target_versions`, migrations 0007 and 0012),
the planner labels a target's rollback points with them.

The regression guard (issue 31) reads the same rows: a version rolled away from is bad for
its target, with its incident, until an approver clears it with a reason; the guard's
answer for a version is `bad`, `ok` or `unknown` (never rolled to or from). People and
pipelines name a version as they know it: the stored key, one of its images, or an image's
tag or digest (`names_version`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True)
class VersionNote:
    """What a run's end teaches about its target's versions (written with the transition)."""

    environment: str
    target: str
    incident_id: str | None
    """The run's incident; None for a healthy observation by the bot's own metric poll."""
    healthy: tuple[str, str] | None = None
    """(version key, label) verified healthy."""
    rolled_away: tuple[str, str] | None = None
    """(version key, label) a rollback moved away from."""


@dataclass(frozen=True)
class KnownVersions:
    """A target's remembered versions: the last known healthy one, those rolled away from."""

    healthy: str | None = None
    """The version key of the newest healthy observation."""
    healthy_label: str = ""
    healthy_incident: str | None = None
    rolled_away: dict[str, str] = field(default_factory=dict)
    """Version key → the incident that rolled away from it."""
    healthy_keys: tuple[str, ...] = ()
    """Every version known healthy, newest first (`healthy` is the first)."""


def version_key(version: str) -> str:
    """A version as stored (255 characters at most; a longer one keeps a digest of the rest)."""
    if len(version) <= 255:
        return version
    return version[:190] + "…" + hashlib.sha256(version.encode()).hexdigest()[:60]


# -- the regression guard: a version rolled away from stays bad until an approver clears it --

VERSION_CHARACTERS = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:@+=~-]*$")
MAX_VERSION = 1000


class MalformedVersion(ValueError):
    """Not a version as the bot keeps them; the message says what is wrong."""


def well_formed(version: str) -> str:
    """The version as asked for (`v1.2.5`, `registry/app:v1.2.5`, `img:1,sidecar:2`),
    normalised; MalformedVersion when it cannot name one.

    A version is what a rollback point runs (`RollbackPoint.key`): image references joined by
    ", ", a backup, a migration, a colour. Letters, digits and `_ . / : @ + = ~ -`, no space
    inside one part, at most 1000 characters.
    """
    parts = [p.strip() for p in version.split(",")]
    if not version.strip():
        raise MalformedVersion("no version given")
    if len(version) > MAX_VERSION:
        raise MalformedVersion(f"a version is at most {MAX_VERSION} characters")
    for part in parts:
        if not VERSION_CHARACTERS.match(part):
            shown = part[:60] or "an empty part"
            raise MalformedVersion(
                f"{shown!r} is not a version: use letters, digits and _ . / : @ + = ~ - "
                "(several images joined by commas)"
            )
    return ", ".join(parts)


def short(key: str) -> str:
    """A version as people say it: each image's last path part (`api:v1.2.4`), else the key."""
    return ", ".join(part.strip().rsplit("/", 1)[-1] or part for part in key.split(","))


def _names(image: str) -> set[str]:
    """What one image of a version answers to: itself, its tag, its digest."""
    names = {image}
    name, _, digest = image.partition("@")
    if digest:
        names.add(digest)
    repository, colon, tag = name.rpartition(":")
    if colon and repository and "/" not in tag:
        names.add(tag)
    return names


def names_version(asked: str, key: str) -> bool:
    """Whether `asked` (well formed) names the stored version `key`: the key itself, or one
    of its images by reference, tag or digest."""
    if version_key(asked) == key or asked == key:
        return True
    if ", " in asked:
        return False
    return any(asked in _names(image.strip()) for image in key.split(","))


class Verdict(StrEnum):
    """The regression guard's answer for one version of one target."""

    BAD = "bad"
    """Rolled away from in an incident and not cleared: do not deploy it."""
    OK = "ok"
    """Verified healthy, or rolled away from and then cleared by an approver."""
    UNKNOWN = "unknown"
    """The bot has never rolled this target to or from it: it cannot say."""


@dataclass(frozen=True)
class VersionMark:
    """What the bot keeps about one version of one target (a `target_versions` row)."""

    environment: str
    target: str
    version: str
    """The stored key (`RollbackPoint.key`)."""
    label: str
    healthy: bool
    incident_id: str | None
    at: datetime
    cleared_by: str | None = None
    cleared_at: datetime | None = None
    cleared_reason: str | None = None

    @property
    def bad(self) -> bool:
        """Rolled away from and not cleared."""
        return not self.healthy and self.cleared_at is None

    @property
    def verdict(self) -> Verdict:
        return Verdict.BAD if self.bad else Verdict.OK

    @property
    def reason(self) -> str:
        """One sentence for a person or a pipeline's log."""
        incident = self.incident_id or "an earlier incident"
        if self.healthy:
            how = f"after the rollback in {incident}" if self.incident_id else "by monitoring"
            return f"verified healthy {how}"
        if self.cleared_at is None:
            return f"rolled back from in {incident}; not cleared"
        return f"rolled back from in {incident}; cleared: {self.cleared_reason}"


def worst_mark(marks: list[VersionMark]) -> VersionMark | None:
    """The mark that answers for several a version names: a bad one first, then the newest."""
    ordered = sorted(marks, key=lambda m: (m.bad, m.at), reverse=True)
    return ordered[0] if ordered else None


@dataclass(frozen=True)
class Ending:
    """A rollback that succeeded: moving its target to `to_key` ended `incident_id`."""

    incident_id: str
    to_key: str
    to_label: str
    from_key: str | None
    finished_at: datetime | None
