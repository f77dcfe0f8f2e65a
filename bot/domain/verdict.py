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

Here are the verdict's record and its rules, pure; gathering the facts from the
targets is `bot.execution.assessor`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actions.base import Finding, Level

if TYPE_CHECKING:
    from actions.database.schema_compat import Migration

ORDER = (Level.OK, Level.LOSS, Level.RISKY, Level.BLOCKED)
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
        """What the plan hash covers: the level, each finding's stable basis, the suggestion.

        Only what the plan itself does and finds: another incident's lock on a neighbouring
        target is shown with the verdict but not hashed. In an outage several targets are
        requested at once; each request opened would otherwise make every earlier plan of
        the environment unapprovable, for a change in none of them.
        """
        own = [f for f in self.evidence if not is_neighbour(f)]
        level = worst([f.level for f in own])
        return [self.target, level.value, *(f.hashed for f in own), self.suggestion]

    def as_json(self) -> dict[str, Any]:
        """The stored form (`runs.verdicts`)."""
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
    """Name the incident other than `exclude` holding a target (`Runs.lock_holder`)."""

    def holder(target: str) -> str | None:
        found = lock_holder(environment=environment, targets=[target])
        return None if found == exclude else found

    return holder


NEIGHBOUR = "lock "
"""The basis of a finding about another incident's lock on a neighbouring target."""


def is_neighbour(finding: Finding) -> bool:
    """Whether a finding is about a neighbour (another incident's lock), not this plan."""
    return finding.basis.startswith(NEIGHBOUR)


def worst(levels: Sequence[Level]) -> Level:
    """The heaviest level of several (OK when there are none)."""
    return max(levels, key=ORDER.index, default=Level.OK)


def blocked(verdicts: Sequence[Verdict]) -> str | None:
    """Say why Approve is disabled, or None when no verdict blocks."""
    reasons = [f"{v.target} {v.headline}" for v in verdicts if v.level == Level.BLOCKED]
    return "; ".join(reasons) or None


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
