"""The decision matrix follows the procedures' flowchart and severity table exactly."""

from __future__ import annotations

import itertools

import pytest

from bot.domain.decision import (
    SEVERITY_TABLE,
    Answers,
    Recommendation,
    Severity,
    agrees,
    asked,
    decide,
    level,
)

R = Recommendation


def expected(functional: bool, quick: bool, data: bool, severe: bool) -> Recommendation:
    """The flowchart, written independently of the implementation."""
    if functional and quick:
        return R.FIX_FORWARD
    if data:
        return R.IMMEDIATE_ROLLBACK
    if severe:
        return R.ROLLBACK_RECOMMENDED
    return R.MONITOR_AND_FIX_FORWARD


@pytest.mark.parametrize(
    ("functional", "quick", "data", "severe"), list(itertools.product([True, False], repeat=4))
)
def test_every_combination_of_answers_gives_the_flowcharts_recommendation(
    functional: bool, quick: bool, data: bool, severe: bool
) -> None:
    decision = decide(Answers(functional, quick, data, severe))
    assert decision.recommendation is expected(functional, quick, data, severe)
    assert decision.missing == ()
    assert decision.reason


def test_functional_and_quickly_fixable_is_fix_forward_whatever_else_is_answered() -> None:
    decision = decide(Answers(functional=True, fixable_quickly=True))
    assert decision.recommendation is R.FIX_FORWARD
    assert "fixed quickly" in decision.reason


def test_not_functional_with_data_at_risk_is_immediate_rollback_and_says_why() -> None:
    decision = decide(Answers(functional=False, data_at_risk=True))
    assert decision.recommendation is R.IMMEDIATE_ROLLBACK
    assert decision.reason == "The system is not functional and data is at risk: roll back now."


def test_functional_but_slow_to_fix_falls_through_to_the_data_question() -> None:
    decision = decide(Answers(functional=True, fixable_quickly=False))
    assert decision.recommendation is None
    assert decision.missing == ("data_at_risk",)


@pytest.mark.parametrize(
    ("answers", "missing"),
    [
        (Answers(), "functional"),
        (Answers(functional=True), "fixable_quickly"),
        (Answers(functional=False), "data_at_risk"),
        (Answers(functional=False, data_at_risk=False), "severe_impact"),
    ],
)
def test_unanswered_questions_are_asked_in_the_flowcharts_order(
    answers: Answers, missing: str
) -> None:
    decision = decide(answers)
    assert decision.recommendation is None
    assert decision.missing == (missing,)
    assert decision.reason.startswith("Answer: ")


@pytest.mark.parametrize(
    ("severity", "response", "decision"),
    [
        (Severity.CRITICAL, "Immediate", "Automatic rollback"),
        (Severity.HIGH, "15 minutes", "Rollback recommended"),
        (Severity.MEDIUM, "1 hour", "Fix forward preferred"),
        (Severity.LOW, "4 hours", "Fix forward"),
    ],
)
def test_every_severity_has_the_procedures_response_time_and_decision(
    severity: Severity, response: str, decision: str
) -> None:
    row = level(severity)
    assert (row.response_time, row.decision) == (response, decision)


def test_severity_table_is_ordered_by_response_time() -> None:
    minutes = [row.response_minutes for row in SEVERITY_TABLE.values()]
    assert minutes == sorted(minutes)
    assert list(SEVERITY_TABLE) == [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]


def test_only_rollback_recommendations_roll_back() -> None:
    assert {r for r in R if r.rolls_back} == {R.IMMEDIATE_ROLLBACK, R.ROLLBACK_RECOMMENDED}


def test_fixable_quickly_is_on_the_path_only_while_the_system_is_functional() -> None:
    assert asked(Answers()) == ("functional",)
    assert asked(Answers(functional=True)) == ("functional", "fixable_quickly")
    assert asked(Answers(functional=True, fixable_quickly=False)) == (
        "functional",
        "fixable_quickly",
        "data_at_risk",
    )
    assert asked(Answers(functional=False, fixable_quickly=True)) == ("functional", "data_at_risk")
    assert asked(Answers(functional=False, data_at_risk=False))[-1] == "severe_impact"


def test_the_severity_table_and_the_flowchart_agree_or_are_told_apart() -> None:
    assert agrees(Severity.CRITICAL, Recommendation.IMMEDIATE_ROLLBACK)
    assert not agrees(Severity.CRITICAL, Recommendation.FIX_FORWARD)
    assert not agrees(Severity.LOW, Recommendation.ROLLBACK_RECOMMENDED)
    assert agrees(Severity.MEDIUM, Recommendation.MONITOR_AND_FIX_FORWARD)
