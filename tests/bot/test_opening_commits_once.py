"""Opening an incident is one transaction: seen whole by every other session, or not at all.

The request, its run and target locks, a break-glass approval and review, the versions,
the verdicts and the ticked checks are recorded in one unit of work
(`Database.unit`). A runner, status or App Home reading meanwhile sees none of it; a
failure at any write of the request leaves no row behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.application.flows import Flows
from bot.execution.planner import Planner
from bot.execution.workflow import BREAK_GLASS_PHRASE
from bot.persistence.models import BreakGlassReview, Event, Incident, Run, TargetLock
from bot.persistence.store import Store, make_engine
from tests.fakes.flows import RecordingThread, make_flows, request

BREAK_GLASS = {
    "break_glass": True,
    "confirmation": BREAK_GLASS_PHRASE,
    "ticked": frozenset({"backup_verified"}),
}

WRITES = [
    ("incidents", "create"),
    ("runs", "create"),
    ("runs", "transition"),
    ("reviews", "assign"),
    ("runs", "set_versions"),
    ("events", "add"),
]
"""Every repository write the opening of a break-glass incident makes."""


@pytest.fixture
def flows(store: Store, planner: Planner) -> Flows:
    return make_flows(store, planner, RecordingThread(store=store))


@pytest.fixture
def other(database_url: str) -> Iterator[Store]:
    """The same database seen from another replica (its own engine and connections)."""
    engine = make_engine(database_url)
    yield Store(engine)
    engine.dispose()


def _counts(store: Store) -> dict[str, int]:
    with store.reading() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Incident, Run, TargetLock, Event, BreakGlassReview)
        }


def _spy(store: Store, repo: str, name: str, before: Callable[[], None]) -> None:
    """Call `before` each time the repository method runs, then run it."""
    target = getattr(store, repo)
    real = getattr(target, name)

    def spied(*args: Any, **kwargs: Any) -> Any:
        before()
        return real(*args, **kwargs)

    setattr(target, name, spied)


def test_another_replica_sees_a_break_glass_run_only_once_its_review_and_checks_are_in(
    flows: Flows, store: Store, other: Store
) -> None:
    seen: list[dict[str, Any]] = []

    def look() -> None:
        seen.append(
            {
                "claimable": other.leases.claimable(),
                "runs": other.runs.find(),
                "holder": other.runs.lock_holder(environment="prod", targets=["app"]),
                "counts": _counts(other),
            }
        )

    _spy(store, "events", "add", look)  # the ticked check: the last write of the request
    opened = flows.open_incident(request(**BREAK_GLASS))
    assert seen, "the spy never ran"
    empty = {"incidents": 0, "runs": 0, "target_locks": 0, "events": 0, "break_glass_reviews": 0}
    assert seen[0] == {"claimable": [], "runs": [], "holder": None, "counts": empty}
    assert opened.run.state == "approved"
    assert other.leases.claimable() == [opened.run.id]
    review = other.reviews.get(opened.run.id)
    assert review is not None and review.reviewer
    kinds = [e.kind for e in other.events.of(opened.incident.id)]
    assert {"run.break_glass", "review.assigned", "prerollback.check"} <= set(kinds)


@pytest.mark.parametrize(("repo", "name"), WRITES, ids=[f"{r}.{n}" for r, n in WRITES])
def test_a_failure_at_any_write_of_the_request_leaves_no_row_behind(
    flows: Flows, store: Store, repo: str, name: str
) -> None:
    before = _counts(store)

    def fail() -> None:
        raise RuntimeError(f"the database went away during {repo}.{name}")

    _spy(store, repo, name, fail)
    with pytest.raises(RuntimeError, match="went away"):
        flows.open_incident(request(**BREAK_GLASS))
    assert _counts(store) == before
    assert store.runs.lock_holder(environment="prod", targets=["app"]) is None


def test_after_a_failed_opening_the_target_can_be_requested_again(
    flows: Flows, store: Store
) -> None:
    real = store.runs.set_versions

    def once(*args: Any, **kwargs: Any) -> None:
        store.runs.set_versions = real  # type: ignore[method-assign]
        raise RuntimeError("the database went away")

    store.runs.set_versions = once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        flows.open_incident(request())
    opened = flows.open_incident(request())
    assert [r.id for r in store.runs.find()] == [opened.run.id]
    assert opened.run.to_version  # the versions are recorded with the run
