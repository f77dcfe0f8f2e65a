"""Which other incidents' fixes a rollback takes away, from the bot's own history.

A rollback takes away every version deployed since the one it goes back to, and with them
whatever those versions fixed. GitLab's rollback check warns when a rollback would undo
another incident's fix, after a rollback there brought an earlier incident back. The bot
knows its own share of that history: each rollback that succeeded ended its incident by
moving its target to the version it went to (`VersionBook.endings`). So:

- a version this rollback takes away (the running one, and each listed between it and the
  point rolled back to; targets list their points newest first, as the form shows them)
  that a succeeded rollback moved to ended that rollback's incident: rolling back past it
  may bring that incident back, and the verdict is **risky**, saying which;
- the point rolled back to is itself marked bad (rolled back from in an incident and not
  cleared, the regression guard): **risky** too, naming the incident.

What cannot be placed is said, not guessed: when the target's points cannot be read, or the
running version or the point rolled back to is not among them, the finding says that the
answer is unknown and why. A target the bot never rolled back, with nothing marked, gets no
finding: there is nothing in the history to weigh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from actions.base import ActionError, Finding, Level, RollbackPoint, running_point
from bot.config import Environment, RollbackConfig
from bot.domain.plans import default_point
from bot.domain.versions import Ending, VersionMark, short, version_key
from bot.persistence.versions import VersionBook

UNKNOWN = "whether this rollback takes away another incident's fix is unknown"
UNKNOWN_BASIS = "fixes unknown"
"""What the plan hash covers of an unknown: not the error's words, which may vary."""


class History(Protocol):
    """What the bot's history says about a target's versions."""

    def endings(self, env: Environment, target: str) -> list[Ending]:
        """The target's succeeded rollbacks, newest first."""

    def marks(self, env: Environment, target: str) -> list[VersionMark]:
        """What is kept about each version of the target."""


@dataclass(frozen=True)
class StoreHistory:
    """`History` from the bot's store, for the environments of `config`."""

    book: VersionBook
    config: RollbackConfig

    def _name(self, env: Environment) -> str:
        names = [name for name, known in self.config.environments.items() if known is env]
        names = names or [name for name, known in self.config.environments.items() if known == env]
        if not names:
            raise LookupError("the environment is not in the bot's config")
        return names[0]

    def endings(self, env: Environment, target: str) -> list[Ending]:
        return self.book.endings(environment=self._name(env), target=target)

    def marks(self, env: Environment, target: str) -> list[VersionMark]:
        return self.book.marks(environment=self._name(env), target=target)


def weigh_fixes(
    history: History,
    env: Environment,
    target: str,
    ref: str | None,
    points: Callable[[], list[RollbackPoint]],
) -> list[Finding]:
    """The findings about other incidents' fixes for rolling `target` back to `ref`."""
    try:
        endings = history.endings(env, target)
        bad = {m.version: m for m in history.marks(env, target) if m.bad}
    except (SQLAlchemyError, LookupError) as exc:
        said = f"{UNKNOWN}: the bot's history could not be read ({exc})"
        return [Finding(Level.OK, said, UNKNOWN_BASIS)]
    if not endings and not bad:
        return []
    try:
        listed = points()
    except (ActionError, OSError) as exc:
        said = f"{UNKNOWN}: the target's versions could not be read ({exc})"
        return [Finding(Level.OK, said, UNKNOWN_BASIS)]
    current = running_point(listed)
    to = next((p for p in listed if p.ref == ref), None) if ref else default_point(listed)
    if current is None or to is None:
        which = "the running version" if current is None else f"the point {ref}"
        said = f"{UNKNOWN}: {which} is not among the target's versions"
        return [Finding(Level.OK, said, UNKNOWN_BASIS)]
    return _found(listed, current, to, endings, bad)


def _found(
    listed: list[RollbackPoint],
    current: RollbackPoint,
    to: RollbackPoint,
    endings: list[Ending],
    bad: dict[str, VersionMark],
) -> list[Finding]:
    findings = []
    to_key = version_key(to.key)
    if to_key in bad:
        incident = bad[to_key].incident_id or "an earlier incident"
        text = (
            f"{short(to.key)} was rolled back from in {incident} and not cleared: rolling back "
            f"to it may bring {incident} back"
        )
        findings.append(Finding(Level.RISKY, text, f"marked bad {incident} {to_key}"))
    start, end = listed.index(current), listed.index(to)
    away = {version_key(p.key) for p in listed[start:end]} - {to_key}
    ended = [e for e in endings if version_key(e.to_key) in away]
    for ending in ended:
        text = (
            f"{short(ending.to_key)} ended {ending.incident_id}: rolling back to "
            f"{short(to.key)} takes it away and may bring that back"
        )
        basis = f"fix {ending.incident_id} {version_key(ending.to_key)}"
        findings.append(Finding(Level.RISKY, text, basis))
    if not ended and endings:
        count = len(endings)
        text = (
            f"no version this rollback takes away ended an earlier incident ({count} "
            f"succeeded rollback{'s' * (count != 1)} of this target in the bot's history)"
        )
        findings.append(Finding(Level.OK, text, "no fix taken away"))
    return findings
