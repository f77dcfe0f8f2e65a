"""A form refused after its ack comes back with every answer kept and the reason at its top."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.harness import Sandbox
from tests.fakes.config import ALICE
from tests.fakes.thread import ANSWERS, plan_message
from tests.fakes.waiting import wait_for


def _initial(view: dict[str, Any], block_id: str) -> Any:
    block = next(b for b in view["blocks"] if b.get("block_id") == block_id)
    option = block["element"].get("initial_option") or {}
    return option.get("value")


def test_a_plan_the_target_refuses_gives_the_form_back_to_be_corrected(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    alice = sandbox.person(ALICE)
    assert alice.slash("app prod to 99").status_code == 200  # no revision 99 in the history
    view_id = alice.opened_view()
    wait_for(
        lambda: any(
            b.get("block_id") == "severity" for b in sandbox.slack.view(view_id).view["blocks"]
        ),
        what="the modal to fill",
    )
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    wait_for(lambda: sandbox.process.deps.later.snapshot().queued == 0, what="the re-renders")
    answered = alice.submit(view_id)
    assert "Creating incident" in str(answered.json()["view"])
    view = wait_for(
        lambda: (
            v if "Nothing was requested" in str(v := sandbox.slack.view(view_id).view) else None
        ),
        what="the form to come back",
    )
    assert view["callback_id"] == "rollback_modal"  # the form itself, submittable again
    said = str(view["blocks"])
    assert "the plan could not be built: unable to find specified revision 99 in history" in said
    for block_id, value in ANSWERS.items():
        assert _initial(view, block_id) == value, block_id
    assert sandbox.process.store.runs.find() == []
    # Corrected and sent again, the same form opens the incident.
    alice.choose(view_id, "point", "1")
    wait_for(lambda: sandbox.process.deps.later.snapshot().queued == 0, what="the re-render")
    assert alice.submit(view_id).status_code == 200
    wait_for(lambda: plan_message(sandbox), what="the plan message")
    assert len(sandbox.process.store.runs.find()) == 1
