"""Break-glass reviews in the store and the use case, on SQLite and PostgreSQL; migration 0008."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from bot.application.reviews import Reviews
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.workflow import BREAK_GLASS_PHRASE, Refused, Workflow
from bot.persistence.models import Base, Run
from bot.persistence.store import Store, downgrade, make_engine, upgrade
from tests.fakes.config import ALICE, BOB, CAROL, MALLORY, Clock


def broken_glass(workflow: Workflow, planner: Planner, *, target: str, requester: str) -> Run:
    env = workflow.config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target=target, point="1")
    _, run = workflow.request(
        plan=plan,
        requester=requester,
        severity=Severity.CRITICAL,
        answers=Answers(functional=False, data_at_risk=True),
        break_glass=True,
        confirmation=BREAK_GLASS_PHRASE,
    )
    return run


def test_reviews_go_round_robin_and_are_marked_once(
    store: Store, workflow: Workflow, planner: Planner, clock: Clock
) -> None:
    reviews = Reviews(store, workflow.config)
    first = broken_glass(workflow, planner, target="app", requester=ALICE)
    second = broken_glass(workflow, planner, target="db", requester=ALICE)
    a = reviews.assign(first)
    clock.advance(seconds=1)
    b = reviews.assign(second)
    assert a is not None and b is not None and (a.reviewer, b.reviewer) == (BOB, CAROL)
    again = reviews.assign(first)  # assigning twice keeps the first owner
    assert again is not None and again.reviewer == BOB
    assert [r.run_id for r in reviews.unreviewed()] == [first.id, second.id]

    with pytest.raises(Refused, match="another approver must review it"):
        reviews.mark_reviewed(first.id, user=ALICE)
    with pytest.raises(Refused, match="only an approver of prod"):
        reviews.mark_reviewed(first.id, user=MALLORY)
    clock.advance(minutes=5)
    done = reviews.mark_reviewed(first.id, user=MALLORY, user_groups=frozenset({"SDBAS00001"}))
    assert done.reviewed_by == MALLORY and done.reviewed_at == clock.now  # a group approver
    with pytest.raises(Refused, match=f"already reviewed by <@{MALLORY}>"):
        reviews.mark_reviewed(first.id, user=CAROL)
    assert [r.run_id for r in reviews.unreviewed()] == [second.id]
    kinds = [e.kind for e in store.events.of(first.incident_id)]
    assert kinds.count("review.assigned") == 1 and kinds.count("run.reviewed") == 1


def test_a_normal_run_gets_no_review(store: Store, workflow: Workflow, planner: Planner) -> None:
    env = workflow.config.environment("prod")
    plan = planner.build(env_name="prod", env=env, target="app", point="1")
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    assert Reviews(store, workflow.config).assign(run) is None
    assert store.reviews.pending() == []


def test_upgrading_to_0008_lists_earlier_break_glass_runs_as_unreviewed(
    empty_database_url: str,
) -> None:
    from alembic import command

    from bot.persistence.store import _alembic_config

    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0006")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incidents (id, created_at, environment, target, severity, source, "
                "opened_by, summary, answers, reason) VALUES ('INC-1', '2026-11-24 03:00:00', "
                "'prod', 'app', 'critical', 'slack', 'UALICE0001', '', '{}', '')"
            )
        )
        for run_id, glass in (("r1", "true"), ("r2", "false")):
            conn.execute(
                text(
                    "INSERT INTO runs (id, incident_id, environment, target, plan, plan_hash, "
                    "requester, state, version, approvals_required, break_glass, "
                    "review_required, force, needs_manual, outcome, created_at, expires_at, "
                    f"memory, slack) VALUES ('{run_id}', 'INC-1', 'prod', 'app', '[]', 'h', "
                    f"'UALICE0001', 'succeeded', 0, 1, {glass}, {glass}, false, false, '', "
                    "'2026-11-24 03:00:00', '2026-11-24 04:00:00', '{}', '{}')"
                )
            )
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "break_glass_reviews" in str(d)] == []  # model and 0008 agree
    (review,) = Store(engine).reviews.pending()
    assert (review.run_id, review.reviewer, review.requester) == ("r1", "approvers", ALICE)
    downgrade(engine, "0006")  # SQLite: with foreign keys unenforced meanwhile (0011)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 2
    engine.dispose()
