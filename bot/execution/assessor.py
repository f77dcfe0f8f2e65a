"""Weigh each target of a plan into its reversibility verdict (`bot.domain.verdict`).

The facts come from the targets (`actions.base.Evidenced.evidence`, else their
pre-rollback checks), for schema compatibility from the app's database
(`actions.database.schema_compat`), and for other incidents' fixes from the bot's own
history (`bot.execution.fixes`): reading them is I/O, so the assessor sits
with the planner that calls it, and the verdict it returns is a plain record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from actions.base import ActionError, Check, Evidenced, Finding, Level, Target
from actions.database import DatabaseParams
from actions.docker import DockerParams
from actions.kubernetes import KubernetesParams
from actions.params import SchemaLink
from bot.config import Environment, FullParams
from bot.domain.verdict import NEIGHBOUR, Holders, Verdict, weigh_migrations, worst
from bot.execution.fixes import History, weigh_fixes

if TYPE_CHECKING:
    from actions.database.schema_compat import Migration


def _checked(check: Check, *, forced: bool = False) -> Finding:
    """A pre-rollback check as evidence: a failing one blocks, unless the plan is forced past
    it, when it is risky and says so (the person chose to run anyway, and sees why)."""
    if check.ok:
        return Finding(Level.OK, f"{check.name}: {check.detail}", check.name)
    if forced:
        text = f"{check.name} fails: {check.detail} (forced: the rollback runs anyway)"
        return Finding(Level.RISKY, text, f"{check.name} forced")
    return Finding(Level.BLOCKED, f"{check.name} fails: {check.detail}", check.name)


@dataclass
class Assessor:
    """Weighs each target of a plan; `target_of` builds (or reuses) the Target for params."""

    target_of: Callable[[Any], Target]
    holders: Holders = field(default=lambda name: None)
    force: bool = False
    """The plan is forced past its failing checks: they weigh risky, not blocked."""
    drilled: Callable[[DatabaseParams], Finding] | None = None
    """A database's backup set's last restore drill (`bot.execution.drill_evidence`)."""
    history: History | None = None
    """The bot's own history, for the other incidents' fixes a rollback takes away."""

    def assess(self, env: Environment, target: str, point: str | None) -> tuple[Verdict, ...]:
        """One verdict per target the rollback of `target` rolls back, in plan order."""
        members = env.members(target)
        return tuple(
            self._verdict(env, member, point if member == target else None, members)
            for member in members
        )

    def _verdict(self, env: Environment, name: str, ref: str | None, members: list[str]) -> Verdict:
        params = env.targets[name]
        findings = self._evidence(params, ref)
        if self.drilled is not None and isinstance(params, DatabaseParams):
            findings.append(self.drilled(params))
        suggestion = ""
        link = getattr(params, "schema_from", None)
        if isinstance(link, SchemaLink):
            schema, suggestion = self._schema(env, params, link, ref, members)
            findings += schema
        findings += self._locks(env, name, members)
        if self.history is not None and not isinstance(params, FullParams):
            findings += weigh_fixes(
                self.history, env, name, ref, lambda: self.target_of(params).points()
            )
        return Verdict(name, worst([f.level for f in findings]), tuple(findings), suggestion)

    def _evidence(self, params: Any, ref: str | None) -> list[Finding]:
        try:
            target = self.target_of(params)
            if isinstance(target, Evidenced):
                return list(target.evidence(ref))
            return [_checked(c, forced=self.force) for c in target.checks(ref)]
        except (ActionError, OSError) as exc:
            return [Finding(Level.RISKY, f"evidence could not be gathered: {exc}", "no evidence")]

    def _locks(self, env: Environment, name: str, members: list[str]) -> list[Finding]:
        """Other incidents holding this environment's targets: the app's database first."""
        found = []
        related = []
        link = getattr(env.targets[name], "schema_from", None)
        if isinstance(link, SchemaLink) and link.database not in members:
            related.append(link.database)
        related += [other for other in env.targets if other not in members]
        for other in dict.fromkeys(related):
            holder = self.holders(other)
            if holder is not None:
                found.append(
                    Finding(
                        Level.RISKY,
                        f"{holder} holds {other} in this environment: two rollbacks at once may "
                        "undo each other",
                        f"{NEIGHBOUR}{other} {holder}",
                    )
                )
        return found

    # -- schema compatibility ------------------------------------------------------------

    def _schema(
        self, env: Environment, params: Any, link: SchemaLink, ref: str | None, members: list[str]
    ) -> tuple[list[Finding], str]:
        """Weigh the migrations applied since the version rolled back to was deployed."""
        database = env.targets.get(link.database)
        if not isinstance(database, DatabaseParams):
            return [
                Finding(Level.RISKY, f"schema_from.database {link.database} is not a database")
            ], ""
        if link.database in members:
            text = f"{link.database} is rolled back in this plan too (full rollback)"
            return [Finding(Level.OK, text, "database in plan")], ""
        try:
            migrations = self._migrations(database, params, link, ref)
        except (ActionError, OSError) as exc:
            text = f"schema compatibility with {link.database} not known: {exc}"
            return [Finding(Level.RISKY, text, "schema unknown")], ""
        return weigh_migrations(link.database, migrations)

    def _migrations(
        self, database: DatabaseParams, params: Any, link: SchemaLink, ref: str | None
    ) -> list[Migration]:
        from actions.database.schema_compat import Migrations  # psycopg: only when weighed

        found = Migrations(database)
        version, deployed = self._version_and_time(params, ref)
        if version is not None and version in link.versions:
            return found.after(link.versions[version])
        if deployed is None:
            raise ActionError(
                "the version rolled back to has no known deploy time; "
                "map it in schema_from.versions"
            )
        return found.since(deployed)

    def _version_and_time(self, params: Any, ref: str | None) -> tuple[str | None, datetime | None]:
        # the targets' modules import their clients: loaded when a verdict is weighed, not
        # when the bot starts (`serve`, `check-config`)
        from actions.docker import DockerTarget
        from actions.kubernetes import KubernetesTarget

        target = self.target_of(params)
        if isinstance(params, KubernetesParams) and isinstance(target, KubernetesTarget):
            facts = target.revision_facts(ref)
            tag = facts.images[0].rpartition(":")[2] if facts.images else None
            return tag, facts.created_at
        if isinstance(params, DockerParams) and isinstance(target, DockerTarget):
            points = target.points()
            chosen = next((p for p in points if p.ref == ref), None) if ref else None
            if chosen is None and ref is None:
                chosen = next((p for p in points if not p.is_current and not p.avoid), None)
            label = target.image_version(ref)
            tag = (chosen.ref if chosen else ref or "").rpartition(":")[2] or None
            return label or tag, chosen.created_at if chosen else None
        return None, None
