"""Slack down during a submission: the target is freed and the person is told once it is back.

The notice that the incident was not opened goes through the outbox when neither the modal
nor a direct message can be reached at once, so it is delivered after the outage, not dropped.
"""

from __future__ import annotations

from sandbox.harness import Sandbox
from sandbox.slack.models import Call
from tests.fakes.config import ALICE
from tests.fakes.thread import direct_messages, submit_form, withdrawn
from tests.fakes.waiting import wait_for


def submit_form_in_an_outage(sandbox: Sandbox) -> str:
    """Submit while the thread's post, the modal's update and the first direct messages
    all fail (Slack answering 500 to each try, its client's retries included)."""
    started: list[bool] = []

    def outage(call: Call) -> None:
        if call.method == "chat.postMessage" and not call.ok and not started:
            started.append(True)
            sandbox.slack.fail_next("views.update", error="fatal_error", status=500, times=9)

    sandbox.slack.on_call(outage)
    sandbox.slack.fail_next("chat.postMessage", error="fatal_error", status=500, times=9)
    return submit_form(sandbox)


def test_a_person_is_told_the_incident_was_not_opened_after_a_slack_outage(
    sandbox: Sandbox,
) -> None:
    view_id = submit_form_in_an_outage(sandbox)
    told = wait_for(
        lambda: [t for t in direct_messages(sandbox, ALICE) if "fatal_error" in t],
        timeout=60,
        what="the direct message after the outage",
    )
    assert len(told) == 1 and "Request the rollback again in a minute" in told[0]
    assert "Not opened" not in str(sandbox.slack.view(view_id).view)  # the modal was down
    withdrawn(sandbox)
    store = sandbox.process.store
    (run,) = store.runs.find()

    def notices() -> list[tuple[str, int]]:
        return [
            (m.state, m.attempts)
            for m in store.outbox.messages(run.id)
            if m.kind == "person.notice"
        ]

    ((_sent, attempts),) = wait_for(
        lambda: [n for n in notices() if n[0] == "sent"], what="the notice marked sent"
    )
    assert len(notices()) == 1 and attempts > 1  # it outlived failed deliveries
