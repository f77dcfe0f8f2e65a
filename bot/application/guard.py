"""The regression guard: is a version safe to deploy again, and an approver's clearing of it.

Teams that roll back often keep a rolled-back version from coming back with the next
automatic promotion (Shopify's Shipit, Kargo). Here a version rolled away from is bad for
its target, with the incident that rolled away from it, until an approver clears it with
a reason ("fixed in v1.2.6"). Two ways in, one rule each:

- `ask`: the answer a CI/CD job or an Argo CD PreSync hook gets before it deploys
  (`handlers/guard_api.py` serves it over HTTP): bad, ok or unknown, with the reason;
- `clear`: `/rollback clear …` in Slack; only the environment's approvers, and only a
  version marked bad; who, when and why are kept on the mark and as an audit event on
  the incident that marked it. A cleared version may be the form's default again.

Bad input (an unknown environment or target, a malformed version, a version not marked
bad, no reason) is refused with a sentence and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.config import FullParams, RollbackConfig, UnknownTarget
from bot.domain.versions import (
    MalformedVersion,
    Verdict,
    VersionMark,
    names_version,
    well_formed,
    worst_mark,
)
from bot.execution.workflow import Refused, Workflow
from bot.persistence.store import Conflict
from bot.persistence.versions import VersionBook

MAX_REASON = 500


@dataclass(frozen=True)
class GuardAnswer:
    """The guard's answer for one version of one target."""

    environment: str
    target: str
    version: str
    """The version as asked for, normalised (`well_formed`)."""
    mark: VersionMark | None
    """What answers for it: a bad mark before an ok one; None when the bot knows nothing."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.UNKNOWN if self.mark is None else self.mark.verdict

    def as_json(self) -> dict[str, Any]:
        """The HTTP answer's body: every key always present, null where nothing is known."""
        mark = self.mark
        return {
            "environment": self.environment,
            "target": self.target,
            "version": self.version,
            "verdict": self.verdict.value,
            "deploy": self.verdict != Verdict.BAD,
            "reason": mark.reason if mark else "the bot never rolled this target to or from it",
            "incident": mark.incident_id if mark else None,
            "since": _iso(mark.at) if mark else None,
            "stored_version": mark.version if mark else None,
            "label": mark.label if mark else None,
            "cleared_by": mark.cleared_by if mark else None,
            "cleared_at": _iso(mark.cleared_at) if mark and mark.cleared_at else None,
            "cleared_reason": mark.cleared_reason if mark else None,
        }


def _iso(moment: datetime) -> str:
    """UTC in ISO 8601 with a `Z`, as pipelines' tools parse it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Guard:
    """Answers for versions of configured targets, and clears them for approvers."""

    config: RollbackConfig
    workflow: Workflow

    @property
    def book(self) -> VersionBook:
        return VersionBook(self.workflow.store)

    def check(self, *, environment: str, target: str, version: str) -> str:
        """The version normalised, of a configured target: UnknownTarget, MalformedVersion
        otherwise. Reads the config only, so a command's ack can say it."""
        params = self.config.target(environment, target)
        if isinstance(params, FullParams):
            members = ", ".join(params.targets)
            raise UnknownTarget(
                f"{target} in {environment} is a group of targets ({members}): "
                "versions are kept for each of them"
            )
        return well_formed(version)

    def ask(self, *, environment: str, target: str, version: str) -> GuardAnswer:
        """Say whether `version` of `target` may be deployed; UnknownTarget, MalformedVersion."""
        asked = self.check(environment=environment, target=target, version=version)
        named = self._named(asked, environment, target)
        return GuardAnswer(environment, target, asked, worst_mark(named))

    def clear(
        self,
        *,
        environment: str,
        target: str,
        version: str,
        reason: str,
        user: str,
        user_groups: frozenset[str] = frozenset(),
    ) -> list[VersionMark]:
        """Clear the bad marks `version` names, for an approver, with a reason; return them."""
        try:
            asked = self.check(environment=environment, target=target, version=version)
        except (UnknownTarget, MalformedVersion) as exc:
            raise Refused(str(exc)) from None
        said = " ".join(reason.split())
        if not said:
            raise Refused("say why it is safe again: `… <version> fixed in v1.2.6`")
        if len(said) > MAX_REASON:
            raise Refused(f"the reason is at most {MAX_REASON} characters")
        env = self.config.environment(environment)
        if not self.workflow.is_approver(env, user, user_groups):
            raise Refused(f"only an approver of {environment} clears a version marked bad")
        named = self._named(asked, environment, target)
        bad = [m for m in named if m.bad]
        if not bad:
            raise Refused(_not_marked(asked, target, environment, named))
        try:
            return self.book.clear(bad, by=user, reason=said)
        except Conflict:
            raise Refused(f"{asked} changed while clearing it; look again") from None

    def marked_bad(self) -> list[VersionMark]:
        """Every version marked bad and not cleared, of targets still configured, newest first."""
        return [
            m
            for m in self.book.bad()
            if m.environment in self.config.environments
            and m.target in self.config.environments[m.environment].targets
        ]

    def _named(self, asked: str, environment: str, target: str) -> list[VersionMark]:
        marks = self.book.marks(environment=environment, target=target)
        return [m for m in marks if names_version(asked, m.version)]


def _not_marked(asked: str, target: str, environment: str, named: list[VersionMark]) -> str:
    """Why there is nothing to clear."""
    where = f"{asked} of {target} in {environment}"
    cleared = next((m for m in named if m.cleared_at is not None), None)
    if cleared is not None:
        return (
            f"{where} is not marked bad: {cleared.cleared_by} cleared it ({cleared.cleared_reason})"
        )
    if named:
        return f"{where} is not marked bad: it was {named[0].reason}"
    return f"{where} is not marked bad: no rollback moved away from it"
