"""What the bot remembers about a target's versions: the last healthy one, those rolled away from.

Records only: the store reads and writes them (`target_versions`, migration 0007),
the planner labels a target's rollback points with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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
