"""A failed rollback stays visible until a person marks it resolved, who and when recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.execution.workflow import Refused
from handlers.flows import flows_for
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL, MALLORY
from tests.fakes.home import open_home
from tests.fakes.targets import write_script
from tests.fakes.thread import buttons_of, card, failure_broadcast, request_rollback, text_of, told
from tests.fakes.waiting import wait_for


def test_a_failed_run_stays_in_status_and_app_home_until_marked_resolved(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    run = wait_for(lambda: (r := store.runs.find()[0]).state == "failed" and r, what="the failure")
    broadcast = failure_broadcast(sandbox)
    assert buttons_of(broadcast)[-1] == "mark_resolved"

    status = sandbox.person(ALICE).slash("status").text
    assert "Failed and not resolved" in status and run.incident_id in status
    home = open_home(sandbox, BOB)
    assert run.incident_id in home and "No rollback is waiting" not in home

    sandbox.person(MALLORY).click(CHANNEL, broadcast.ts, "mark_resolved")
    wait_for(lambda: told(sandbox, MALLORY, "requester or an approver"), what="the refusal")
    assert [r.id for r in store.runs.unresolved_failures()] == [run.id]

    sandbox.person(BOB).click(CHANNEL, broadcast.ts, "mark_resolved")
    resolved = wait_for(
        lambda: "Resolved by" in text_of(m := sandbox.slack.message(CHANNEL, broadcast.ts)) and m,
        what="the broadcast to say who resolved it",
    )
    assert f"Resolved by <@{BOB}> at <!date^" in text_of(resolved)
    assert buttons_of(resolved) == []
    assert store.runs.unresolved_failures() == []
    (event,) = [e for e in store.events.of(run.incident_id) if e.kind == "run.resolved"]
    assert event.actor == BOB
    assert "Failed and not resolved" not in sandbox.person(ALICE).slash("status").text
    assert run.incident_id not in open_home(sandbox, BOB).split("Recent rollbacks")[0]
    # Resolving again (an older copy of the message) is refused and records nothing more.
    with pytest.raises(Refused, match="already marked it resolved"):
        flows_for(sandbox.process.deps).failures.resolve(run.id, user=ALICE)
    assert len([e for e in store.events.of(run.incident_id) if e.kind == "run.resolved"]) == 1
    assert card(sandbox)  # the card is still there, with the run's final state


def test_app_home_counts_the_approvals_an_active_run_has(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(approvals_required=2)
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: "1 of 2 approvals" in text_of(card(sandbox)), what="the approval")
    home = wait_for(
        lambda: (h := open_home(sandbox, BOB)) and "1 of 2 approvals" in h and h,
        what="the home tab to count the approval",
    )
    assert "0 of 2 approvals" not in home
