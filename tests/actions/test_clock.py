"""Ages in rollback point labels: one wording for Docker images and Kubernetes revisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from actions.clock import ago, utcnow

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("before", "said"),
    [
        (timedelta(days=3, hours=5), "3d ago"),
        (timedelta(hours=2, minutes=59), "2h ago"),
        (timedelta(minutes=1), "1m ago"),
        (timedelta(seconds=59), "59s ago"),
        (timedelta(seconds=-30), "0s ago"),
    ],
)
def test_ago_names_the_largest_whole_unit(before: timedelta, said: str) -> None:
    assert ago(NOW - before, NOW) == said


def test_ago_of_an_unknown_time_says_so() -> None:
    assert ago(None, NOW) == "age unknown"


def test_utcnow_is_timezone_aware_utc() -> None:
    assert utcnow().tzinfo is UTC
