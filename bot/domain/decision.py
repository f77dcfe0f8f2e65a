"""The procedures' decision matrix: severity levels and the rollback flowchart. Pure functions.

The flowchart is read exactly as drawn in the procedures:

    Is system functional? -> Yes -> Can issue be fixed quickly? -> Yes -> Fix forward
          | No                                   | No
    Is data at risk? -> Yes -> IMMEDIATE ROLLBACK
          | No
    Is user impact severe? -> Yes -> Rollback recommended
          | No
    Monitor and fix forward

so "functional but not quickly fixable" falls through to the data question,
just like "not functional".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from actions.base import Level


class Severity(enum.StrEnum):
    """Severity levels of the procedures' table."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Recommendation(enum.StrEnum):
    """What the flowchart concludes."""

    IMMEDIATE_ROLLBACK = "immediate_rollback"
    ROLLBACK_RECOMMENDED = "rollback_recommended"
    FIX_FORWARD = "fix_forward"
    MONITOR_AND_FIX_FORWARD = "monitor_and_fix_forward"

    @property
    def label(self) -> str:
        """Words for people."""
        return _TITLES[self]

    @property
    def rolls_back(self) -> bool:
        """Whether the recommendation is to roll back."""
        return self in (Recommendation.IMMEDIATE_ROLLBACK, Recommendation.ROLLBACK_RECOMMENDED)


_TITLES = {
    Recommendation.IMMEDIATE_ROLLBACK: "Immediate rollback",
    Recommendation.ROLLBACK_RECOMMENDED: "Rollback recommended",
    Recommendation.FIX_FORWARD: "Fix forward",
    Recommendation.MONITOR_AND_FIX_FORWARD: "Monitor and fix forward",
}


@dataclass(frozen=True)
class SeverityLevel:
    """One row of the severity table."""

    severity: Severity
    description: str
    response_time: str
    response_minutes: int
    decision: str


SEVERITY_TABLE: dict[Severity, SeverityLevel] = {
    Severity.CRITICAL: SeverityLevel(
        Severity.CRITICAL,
        "System down, data loss, security breach",
        "Immediate",
        0,
        "Automatic rollback",
    ),
    Severity.HIGH: SeverityLevel(
        Severity.HIGH,
        "Major functionality broken, significant user impact",
        "15 minutes",
        15,
        "Rollback recommended",
    ),
    Severity.MEDIUM: SeverityLevel(
        Severity.MEDIUM,
        "Minor functionality issues, limited user impact",
        "1 hour",
        60,
        "Fix forward preferred",
    ),
    Severity.LOW: SeverityLevel(
        Severity.LOW,
        "Cosmetic issues, no functional impact",
        "4 hours",
        240,
        "Fix forward",
    ),
}


def level(severity: Severity) -> SeverityLevel:
    """Return the severity table's row."""
    return SEVERITY_TABLE[severity]


def table_rolls_back(severity: Severity) -> bool:
    """Whether the severity table's decision for `severity` is to roll back (Critical, High)."""
    return severity in (Severity.CRITICAL, Severity.HIGH)


def agrees(severity: Severity, recommendation: Recommendation) -> bool:
    """Whether the severity table and the flowchart point the same way (roll back or not).

    They are two views of one incident: a Critical severity with a fix-forward answer
    means one of them is wrong, and the person should look again before going on.
    """
    return table_rolls_back(severity) == recommendation.rolls_back


@dataclass(frozen=True)
class Answers:
    """The flowchart's four questions; None means not answered yet."""

    functional: bool | None = None
    fixable_quickly: bool | None = None
    data_at_risk: bool | None = None
    severe_impact: bool | None = None


@dataclass(frozen=True)
class Decision:
    """The flowchart's conclusion, the reason in words, and whether answers are missing."""

    recommendation: Recommendation | None
    reason: str
    missing: tuple[str, ...] = ()


_QUESTIONS = {
    "functional": "Is the system functional?",
    "fixable_quickly": "Can the issue be fixed quickly?",
    "data_at_risk": "Is data at risk?",
    "severe_impact": "Is user impact severe?",
}


def question(name: str) -> str:
    """Return the flowchart question for an `Answers` field name."""
    return _QUESTIONS[name]


def asked(answers: Answers) -> tuple[str, ...]:
    """The questions on the flowchart's path for these answers, up to the first unanswered.

    "Can the issue be fixed quickly?" is on the path only when the system is functional;
    answering it and then saying the system is not functional takes it off again.
    """
    path = ["functional"]
    if answers.functional is None:
        return tuple(path)
    if answers.functional:
        path.append("fixable_quickly")
        if answers.fixable_quickly is None or answers.fixable_quickly:
            return tuple(path)
    path.append("data_at_risk")
    if answers.data_at_risk is None or answers.data_at_risk:
        return tuple(path)
    path.append("severe_impact")
    return tuple(path)


def decide(answers: Answers) -> Decision:
    """Walk the flowchart as far as the answers go."""
    if answers.functional is None:
        return _needs("functional")
    if answers.functional:
        if answers.fixable_quickly is None:
            return _needs("fixable_quickly")
        if answers.fixable_quickly:
            return Decision(
                Recommendation.FIX_FORWARD,
                "The system is functional and the issue can be fixed quickly: fix forward.",
            )
    lead = (
        "The system is functional but the issue cannot be fixed quickly"
        if answers.functional
        else "The system is not functional"
    )
    if answers.data_at_risk is None:
        return _needs("data_at_risk")
    if answers.data_at_risk:
        return Decision(
            Recommendation.IMMEDIATE_ROLLBACK, f"{lead} and data is at risk: roll back now."
        )
    if answers.severe_impact is None:
        return _needs("severe_impact")
    if answers.severe_impact:
        return Decision(
            Recommendation.ROLLBACK_RECOMMENDED,
            f"{lead}, data is not at risk, and user impact is severe: rollback recommended.",
        )
    return Decision(
        Recommendation.MONITOR_AND_FIX_FORWARD,
        f"{lead}, data is not at risk, and user impact is not severe: monitor and fix forward.",
    )


def _needs(field_name: str) -> Decision:
    return Decision(None, f"Answer: {_QUESTIONS[field_name]}", (field_name,))


class Weighed(Protocol):
    """A target's reversibility verdict, as the recommendation reads it
    (bot.domain.verdict.Verdict)."""

    @property
    def target(self) -> str: ...

    @property
    def level(self) -> Level: ...

    @property
    def headline(self) -> str: ...

    @property
    def suggestion(self) -> str: ...


FIX_FORWARD_SAFER = "Fix forward is the safer move"


def with_verdict(decision: Decision, verdicts: Sequence[Weighed]) -> Decision:
    """Add to the flowchart's conclusion what the reversibility verdict says.

    The flowchart asks whether to roll back; the verdict says whether rolling back
    can restore service. Where it cannot (a blocked target, or a schema the old code
    would break on that no script can roll back), fixing forward is the safer move and
    the recommendation says so; a risky verdict with a way out (a full rollback) keeps
    the recommendation and names the way.
    """
    if decision.recommendation is None or not decision.recommendation.rolls_back:
        return decision
    stuck = [v for v in verdicts if v.level == Level.BLOCKED]
    no_way_back = [
        v for v in verdicts if v.level == Level.RISKY and v.suggestion.startswith("the old image")
    ]
    if stuck or no_way_back:
        why = "; ".join(f"{v.target} {v.headline}" for v in [*stuck, *no_way_back])
        return replace(
            decision,
            recommendation=Recommendation.FIX_FORWARD,
            reason=f"{decision.reason} But the rollback cannot restore service ({why}). "
            f"{FIX_FORWARD_SAFER}.",
        )
    risky = [v for v in verdicts if v.level == Level.RISKY]
    lossy = [v for v in verdicts if v.level == Level.LOSS]
    reason = decision.reason
    if risky:
        why = "; ".join(f"{v.target} {v.headline}" for v in risky)
        reason += f" Mind the verdict: {why}."
    if lossy:
        why = "; ".join(f"{v.target} {v.headline}" for v in lossy)
        reason += f" Data lost: {why}."
    return replace(decision, reason=reason) if reason != decision.reason else decision
