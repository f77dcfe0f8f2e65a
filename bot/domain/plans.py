"""A plan as approved: its steps as planned and as stored, and the hash an approval is bound to.

A plan is rendered from `describe()` of its actions, and its hash covers
exactly those lines: if a newer revision appears or the backup point moves,
the description changes, the hash changes, and the approval no longer holds.

After approval the stored plan is the contract. Each stored step carries the
config target it came from (`source`, None for the environment's own steps:
maintenance, health, communications) and its action's `spec`, from which
`bot.execution.planner` rebuilds it on resume.

Pure: the actions are values here (their `describe()`, `spec` and timeout); reading
the live systems to plan is the planner's (`bot.execution.planner`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any

from actions.base import Action, RollbackPoint, label_of, readable, spec_of
from bot.domain.verdict import Verdict
from bot.domain.versions import KnownVersions, version_key


@dataclass(frozen=True)
class PlannedStep:
    """An action placed in a plan."""

    position: int
    phase: str
    action: Action
    always: bool = False
    source: str | None = None
    """The config target the action came from; None for the environment's own steps."""
    words: str = ""
    """The step's words for people where the bot says more than the action's label (who is
    told what, for communications)."""

    def as_json(self) -> dict[str, Any]:
        """Describe the step as stored with the run."""
        return self.stored().as_json()

    def stored(self) -> StoredStep:
        """Return the step as it is stored with the run."""
        return StoredStep(
            position=self.position,
            phase=self.phase,
            name=self.action.name,
            description=self.action.describe(),
            always=self.always,
            idempotent=self.action.idempotent,
            timeout=self.action.timeout,
            source=self.source,
            spec=spec_of(self.action),
            words=self.words or label_of(self.action),
        )


@dataclass(frozen=True)
class StoredStep:
    """A step as approved and stored with its run (the contract after approval)."""

    position: int
    phase: str
    name: str
    description: str
    always: bool
    idempotent: bool
    timeout: float
    source: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False
    """Stored before steps carried source and spec: rebuilt by planning again."""
    words: str = ""
    """The step's name for people (`actions.base.label_of`); stored, not hashed."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StoredStep:
        """Read a stored step; runs stored before `source`/`spec` existed are `legacy`."""
        return cls(
            position=int(raw["position"]),
            phase=str(raw["phase"]),
            name=str(raw["name"]),
            description=str(raw["description"]),
            always=bool(raw["always"]),
            idempotent=bool(raw["idempotent"]),
            timeout=float(raw["timeout"]),
            source=raw.get("source"),
            spec=dict(raw.get("spec") or {}),
            legacy="spec" not in raw,
            words=str(raw.get("label") or ""),
        )

    def as_json(self) -> dict[str, Any]:
        """Return the JSON stored with the run."""
        return {
            "position": self.position,
            "phase": self.phase,
            "name": self.name,
            "description": self.description,
            "always": self.always,
            "idempotent": self.idempotent,
            "timeout": self.timeout,
            "source": self.source,
            "spec": self.spec,
            "label": self.words or readable(self.name),
        }

    @property
    def label(self) -> str:
        """`step 3 (kubernetes.rollout_undo)`, as outcomes name steps."""
        return f"step {self.position + 1} ({self.name})"


@dataclass(frozen=True)
class RestoredStep:
    """A stored step and the action rebuilt for it, or why it could not be rebuilt."""

    stored: StoredStep
    action: Action | None
    problem: str = ""


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps for one rollback."""

    environment: str
    target: str
    point: str | None
    steps: tuple[PlannedStep, ...]
    notes: tuple[str, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    """The reversibility verdict per target (bot.domain.verdict), part of what an approval is
    for."""

    def as_json(self) -> list[dict[str, Any]]:
        """Return the stored form: one dict per step."""
        return [step.as_json() for step in self.steps]

    @property
    def hash(self) -> str:
        """Return the hash an approval is bound to."""
        verdicts = [v.hashed for v in self.verdicts]
        return plan_hash(
            self.environment, self.target, self.as_json(), self.notes, verdicts=verdicts
        )


def plan_difference(
    *, steps: Sequence[dict[str, Any]], notes: Sequence[str], verdicts: Sequence[Verdict], now: Plan
) -> list[str]:
    """What changed between the plan a person was asked to approve and the plan `now`, in words.

    Each part the plan hash covers, said as it changed: a step planned or no longer
    planned, a note, a target's verdict. An approval refused for a changed plan names this,
    not a guess.
    """
    said: list[str] = []
    before = [str(step["description"]) for step in steps]
    after = [step.action.describe() for step in now.steps]
    said += [f"no longer planned: {line}" for line in before if line not in after]
    said += [f"now planned: {line}" for line in after if line not in before]
    said += [f"no longer noted: {note}" for note in notes if note not in now.notes]
    said += [f"now noted: {note}" for note in now.notes if note not in notes]
    old = {verdict.target: verdict for verdict in verdicts}
    for verdict in now.verdicts:
        was = old.get(verdict.target)
        if was is None or was.hashed != verdict.hashed:
            headline = was.headline if was is not None else "not assessed"
            said.append(f"{verdict.target}'s verdict was {headline}, is now {verdict.headline}")
    return said


def plan_hash(
    environment: str,
    target: str,
    steps: list[dict[str, Any]],
    notes: tuple[str, ...] | list[str],
    *,
    verdicts: list[list[str]] | None = None,
) -> str:
    """Hash what a person approves: environment, target, each step's line, the notes, and
    each target's verdict with the stable part of its evidence (`Verdict.hashed`)."""
    material: dict[str, Any] = {
        "environment": environment,
        "target": target,
        "steps": [[s["phase"], s["name"], s["description"], s["always"]] for s in steps],
        "notes": list(notes),
    }
    if verdicts:
        material["verdicts"] = verdicts
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def default_point(
    points: list[RollbackPoint], *, healthy: Sequence[str] = ()
) -> RollbackPoint | None:
    """Return the point a rollback goes to unless a person picks another.

    The newest known healthy version (`healthy`: `RollbackPoint.key`s, newest first) that
    is on offer and not what runs now. When none is, and what runs now was itself seen
    healthy, there is no default: nothing known is better, so a person must choose.
    Otherwise the point just before the current one (the procedures' "previous version").
    A point marked `avoid` (what a rollback moved away from, the bot's own pre-rollback
    backup) is never the default: it stays on offer for an explicit choice.
    """
    if healthy:
        on_offer = {version_key(p.key): p for p in points if not p.is_current and not p.avoid}
        for key in healthy:
            if key in on_offer:
                return on_offer[key]
        if any(p.is_current and version_key(p.key) in healthy for p in points):
            return None
    seen_current = False
    for point in points:
        if point.is_current:
            seen_current = True
        elif seen_current and not point.avoid:
            return point
    return next((p for p in points if not p.is_current and not p.avoid), None)


def remembered(points: list[RollbackPoint], known: KnownVersions) -> list[RollbackPoint]:
    """Label each point rolled away from ("rolled back from in INC-… · rev 3 · …"), mark it
    `avoid`.

    The current point keeps its words: what runs now is said by the modal's current mark.
    """
    marked = []
    for point in points:
        incident = known.rolled_away.get(version_key(point.key))
        if incident is None or point.is_current:
            marked.append(point)
            continue
        said = f"rolled back from in {incident}"
        # first, so Slack's 75-character option text never cuts it off
        marked.append(replace(point, label=f"{said} · {point.label}", avoid=point.avoid or said))
    return marked


_AGE = re.compile(r"\b\d+(?:\.\d+)? ?(?:s|m|min|h|d) ago\b|\bage unknown\b")
"""A relative age as targets write it in a point's label: `42s ago`, `2h ago`
(`actions.clock.ago`), `12 min ago`, `3.5 h ago` (`actions.database.names.human_duration`)."""


def lasting(point: RollbackPoint) -> str:
    """The point's words as they stay true once stored (the run's versions, known versions).

    A label is written for the form, read at once: `rev 4 · voxflow/api:v1.2.3 · 42s ago ·
    current`. Kept with a run, it is read in history and the RCA days later, where "42s
    ago" is false and "current" may be: the age becomes the time it counts from
    (`created_at`, `2026-12-07 10:04 UTC`, which Slack text shows as a date token), and
    `current` goes; so does a part whose age counts from a time the target did not say.
    """
    at = f"{point.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if point.created_at else ""
    words = [
        _AGE.sub(at, part) if at else "" if _AGE.search(part) else part
        for part in point.label.split(" · ")
    ]
    return " · ".join(w for w in words if w and w != "current")


def with_timeout(action: Action, seconds: float) -> Action:
    """A copy of `action` that may take `seconds` (the approved plan's, or the config's).

    Every action keeps its timeout in its `timeout` attribute and reads it when it runs
    and describes itself; some are frozen dataclasses, hence the copy and the setattr.
    """
    if action.timeout == seconds:
        return action
    changed = copy.copy(action)
    object.__setattr__(changed, "timeout", float(seconds))
    return changed
