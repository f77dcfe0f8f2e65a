"""An incident history in the bot's own store: rollbacks requested, approved, run and ended
through the workflow, as the runner ends them, so the store learns what each one teaches."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.domain.decision import Answers, Severity
from bot.domain.plans import Plan
from bot.domain.states import RunKind
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Lease
from tests.fakes.config import ALICE, BOB, Clock
from tests.fakes.rows import set_run_fields

HOLDER = "tests.fakes.history"


def rolled(
    workflow: Workflow,
    clock: Clock | None = None,
    *,
    away: str,
    to: str,
    ok: bool = True,
    environment: str = "prod",
    target: str = "app",
    kind: RunKind = RunKind.ROLLBACK,
) -> Run:
    """One rollback of `target` from version `away` to `to` (image references), ended; the
    hand-moved `clock` (the store's) moves on as a rollback would take time."""
    clock = clock or Clock()
    plan = Plan(environment=environment, target=target, point=to, steps=())
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(), kind=kind
    )
    set_run_fields(
        workflow.store,
        run.id,
        from_key=away,
        to_key=to,
        from_version=_tag(away),
        to_version=_tag(to),
    )
    clock.advance(minutes=1)
    requested = workflow.store.runs.get(run.id)
    assert requested is not None
    # Approved and held in one update, as a runner holds what it runs: a bot's runner in the
    # same database (a sandbox's) never claims it (its lease outlives any test).
    approved = workflow.store.runs.transition(
        requested,
        to="approved",
        kind="run.approved",
        actor=BOB,
        approved_at=workflow.store.clock(),
        lease_owner=HOLDER,
        lease_expires_at=datetime(2999, 1, 1, tzinfo=UTC),
    )
    lease = Lease(run.id, HOLDER, approved.lease_generation)
    running = workflow.start(approved, lease=lease)
    clock.advance(minutes=4)
    ended = workflow.finish(running, ok=ok, outcome="rolled back" if ok else "failed", lease=lease)
    workflow.store.leases.release(lease)
    clock.advance(hours=1)
    return ended


def _tag(image: str) -> str:
    return image.rpartition(":")[2]
