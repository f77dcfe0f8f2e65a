"""The database verdict's drill finding: did this backup set restore the last time it was tried?

"last restore drill of this backup set: 4 min 10 s, passed, at 2026-12-05 10:04 UTC", or
"never drilled". The newest restore drill that ended (passed or failed) of any config
target with the same backup set (`actions.database.backup_set`) counts, in any
environment: a drill proves the backups, not the config entry.

A failed last drill makes the verdict risky (the restore may fail the same way); a passed
one, or none, adds a line and changes nothing. The finding's hashed basis is the outcome
only ("restore drill passed"), so a newer drill with the same outcome leaves an approval
standing. The time is written in UTC as `DRILLED_AT` reads it back: the plan message
(handlers.drill_blocks.finding_text) turns it into a Slack date token, so every reader
sees it in their own zone and words, and no "2 days ago" goes stale in the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from actions.base import Finding, Level
from actions.database import DatabaseParams, backup_set
from bot.config import RollbackConfig
from bot.domain.recovery import spoken
from bot.persistence.models import Drill
from bot.persistence.store import Store

BASIS = "restore drill "
"""The basis of every drill finding (then `passed`, `failed` or `never`)."""
DRILLED_AT = re.compile(r"at (\d{4}-\d\d-\d\d \d\d:\d\d) UTC$")
"""The drill's time at the end of the finding's text."""
ENDED = ("succeeded", "failed")


def is_drill_finding(finding: Finding) -> bool:
    """Whether a verdict's finding is about the backup set's last restore drill."""
    return finding.basis.startswith(BASIS)


def drilled_at(finding: Finding) -> datetime | None:
    """The time a drill finding names, if any."""
    found = DRILLED_AT.search(finding.text)
    if found is None:
        return None
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@dataclass
class DrillEvidence:
    """For the verdict of a database target: its backup set's last restore drill."""

    store: Store
    config: RollbackConfig

    def __call__(self, params: DatabaseParams) -> Finding:
        """The finding about the newest restore drill of `params`' backup set."""
        last = self.last(params)
        if last is None:
            return Finding(
                Level.OK,
                "never drilled: nobody knows whether these backups restore",
                f"{BASIS}never",
            )
        at = (last.finished_at or last.created_at).replace(tzinfo=UTC)
        when = f"at {at:%Y-%m-%d %H:%M} UTC"
        if last.state == "succeeded":
            took = spoken(last.recover_seconds)
            text = f"last restore drill of this backup set: {took}, passed, {when}"
            return Finding(Level.OK, text, f"{BASIS}passed")
        text = (
            f"last restore drill of this backup set ({last.incident_id}) failed: the backup "
            f"may not restore now either, {when}"
        )
        return Finding(Level.RISKY, text, f"{BASIS}failed")

    def last(self, params: DatabaseParams) -> Drill | None:
        """The newest drill that ended of any target with the same backup set."""
        wanted = backup_set(params)
        found = [
            drill
            for env_name, env in self.config.environments.items()
            for name, other in env.targets.items()
            if isinstance(other, DatabaseParams) and backup_set(other) == wanted
            for drill in self.store.drills.find(
                environment=env_name, target=name, states=ENDED, limit=1
            )
        ]
        return max(found, key=lambda d: d.finished_at or d.created_at, default=None)
