"""The reversibility verdict: can this rollback restore service? One verdict per target.

Before anyone approves, each target of the plan is weighed from facts the
targets expose (`actions.base.Evidenced.evidence`, else their pre-rollback
checks) plus what only the bot can see across targets:

- schema compatibility of an application rollback: the migrations applied to
  the app's database (its `schema_from.database`) since the version rolled back to
  was deployed, each classified additive or breaking from its SQL
  (actions.database.schema_compat) and whether it has a down script;
- other incidents' locks on the environment's targets (two rollbacks at once).

The worst finding decides: **blocked** (the rollback cannot work as planned:
Approve is disabled, break-glass can still override and is recorded),
**risky** (it may not restore service, or something will undo it), **safe with
data loss** (it works and loses the writes after the restore point), **safe**.

The verdict is part of the plan hash (`Verdict.hashed`), so an approval is for
one exact plan and one exact body of evidence; the hashed part of each finding
leaves out what moves by itself (ages, row estimates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from actions.base import ActionError, Check, Evidenced, Finding, Level, Target
from actions.database import DatabaseParams
from actions.docker import DockerParams
from actions.kubernetes import KubernetesParams
from actions.params import SchemaLink
from bot.config import Environment

if TYPE_CHECKING:
    from actions.database.schema_compat import Migration

log = logging.getLogger(__name__)

ORDER = (Level.OK, Level.LOSS, Level.RISKY, Level.BLOCKED)
MEMORY_KEY = "verdicts"
"""Run memory: the verdicts shown with the plan, as JSON."""
FULL_ROLLBACK = "full rollback (database then app) suggested"
Holders = Callable[[str], str | None]
"""Target name → the other incident holding its lock, or None."""


@dataclass(frozen=True)
class Verdict:
    """One target's verdict and the evidence it rests on."""

    target: str
    level: Level
    evidence: tuple[Finding, ...]
    suggestion: str = ""

    @property
    def headline(self) -> str:
        """`safe`, `safe with data loss: …`, `risky: …`, `blocked: …`."""
        worst = [f.text for f in self.evidence if f.level == self.level]
        if self.level == Level.OK:
            return "safe"
        lead = {Level.LOSS: "safe with data loss", Level.RISKY: "risky", Level.BLOCKED: "blocked"}
        tail = f" — {self.suggestion}" if self.suggestion else ""
        return f"{lead[self.level]}: {'; '.join(worst)}{tail}"

    @property
    def hashed(self) -> list[str]:
        """What the plan hash covers: the level, each finding's stable basis, the suggestion."""
        return [self.target, self.level.value, *(f.hashed for f in self.evidence), self.suggestion]

    def as_json(self) -> dict[str, Any]:
        """The stored form (run memory)."""
        return {
            "target": self.target,
            "level": self.level.value,
            "suggestion": self.suggestion,
            "evidence": [[f.level.value, f.text, f.basis] for f in self.evidence],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Verdict:
        """Read the stored form back."""
        return cls(
            target=str(raw["target"]),
            level=Level(raw["level"]),
            suggestion=str(raw.get("suggestion") or ""),
            evidence=tuple(Finding(Level(a), str(b), str(c)) for a, b, c in raw["evidence"]),
        )


def holders_from(
    lock_holder: Callable[..., str | None], environment: str, *, exclude: str | None
) -> Holders:
    """Name the incident other than `exclude` holding a target (`Store.lock_holder`)."""

    def holder(target: str) -> str | None:
        found = lock_holder(environment=environment, targets=[target])
        return None if found == exclude else found

    return holder


def worst(levels: Sequence[Level]) -> Level:
    """The heaviest level of several (OK when there are none)."""
    return max(levels, key=ORDER.index, default=Level.OK)


def blocked(verdicts: Sequence[Verdict]) -> str | None:
    """Say why Approve is disabled, or None when no verdict blocks."""
    reasons = [f"{v.target} {v.headline}" for v in verdicts if v.level == Level.BLOCKED]
    return "; ".join(reasons) or None


def stored(memory: dict[str, Any]) -> list[Verdict]:
    """The verdicts kept with a run (none for runs planned before verdicts existed)."""
    return [Verdict.from_json(v) for v in memory.get(MEMORY_KEY) or []]


def _checked(check: Check) -> Finding:
    if check.ok:
        return Finding(Level.OK, f"{check.name}: {check.detail}", check.name)
    return Finding(Level.BLOCKED, f"{check.name} fails: {check.detail}", check.name)


@dataclass
class Assessor:
    """Weighs each target of a plan; `target_of` builds (or reuses) the Target for params."""

    target_of: Callable[[Any], Target]
    holders: Holders = field(default=lambda name: None)

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
        suggestion = ""
        link = getattr(params, "schema_from", None)
        if isinstance(link, SchemaLink):
            schema, suggestion = self._schema(env, params, link, ref, members)
            findings += schema
        findings += self._locks(env, name, members)
        return Verdict(name, worst([f.level for f in findings]), tuple(findings), suggestion)

    def _evidence(self, params: Any, ref: str | None) -> list[Finding]:
        try:
            target = self.target_of(params)
            if isinstance(target, Evidenced):
                return list(target.evidence(ref))
            return [_checked(c) for c in target.checks(ref)]
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
                        f"lock {other} {holder}",
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


def weigh_migrations(database: str, migrations: list[Migration]) -> tuple[list[Finding], str]:
    """Additive migrations are safe for old code; breaking ones make the rollback risky."""
    if not migrations:
        text = f"no migration of {database} since that version: the old code knows this schema"
        return [Finding(Level.OK, text, "no migrations since")], ""
    findings = []
    breaking = []
    for m in migrations:
        down = f"down script {m.down.name}" if m.down else "no down script"
        if m.change is None:
            breaking.append(m)
            text = f"migration {m.version}: forward script not found, not classified ({down})"
            findings.append(Finding(Level.RISKY, text, f"{m.version} unclassified"))
        elif m.change.additive:
            text = f"migration {m.version} is additive: old code keeps working ({down})"
            findings.append(Finding(Level.OK, text, f"{m.version} additive"))
        else:
            breaking.append(m)
            how = "; ".join(m.change.breaking)
            text = f"migration {m.version} breaks old code ({how}); {down}"
            findings.append(Finding(Level.RISKY, text, f"{m.version} breaking"))
    if not breaking:
        return findings, ""
    missing = [m.version for m in migrations if m.down is None]
    if missing:
        return findings, (
            f"the old image would run on a schema it does not know, and {', '.join(missing)} "
            "cannot be rolled back by script: fix forward, or restore the database from a backup"
        )
    return findings, FULL_ROLLBACK
