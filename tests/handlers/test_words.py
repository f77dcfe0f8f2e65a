"""Steps are named in words for people; the exact request goes to the detail, credentials masked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from unittest.mock import MagicMock

from actions.base import RollbackPoint, label_of, readable
from actions.http.posts import Maintenance, SetMaintenance
from actions.kubernetes.rollout import RolloutUndo
from bot.application.timeline import outcome_in_words, rca_template
from bot.domain.decision import Answers, decide
from handlers import blocks
from handlers import text as t
from handlers.ids import ModalMeta
from handlers.modal_blocks import ModalContent, rollback_modal
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.runs import a_run
from tests.fakes.targets import write_script
from tests.fakes.thread import card, request_rollback, text_of
from tests.fakes.waiting import wait_for


def test_actions_say_what_they_do_in_words() -> None:
    on = SetMaintenance(Maintenance(url="https://app.example/admin/maintenance"), enabled=True)
    off = SetMaintenance(Maintenance(url="https://app.example/admin/maintenance"), enabled=False)
    undo = RolloutUndo(
        apps=MagicMock(),
        namespace="prod",
        deployment="voxflow-api",
        to_revision=3,
        from_revision=4,
        images=("voxflow/api:v1.2.3",),
    )
    assert label_of(on) == "Maintenance mode on"
    assert label_of(off) == "Maintenance mode off"
    assert label_of(undo) == "Roll back voxflow-api to rev 3 (voxflow/api:v1.2.3)"
    assert readable("kubernetes.rollout_status") == "Rollout status"


def test_plan_shows_labels_and_masks_credentials_in_the_detail() -> None:
    run = a_run(2, description="POST https://bot:hunter2@api.example/m?access_token=abc123&x=1")
    run.plan[0]["label"] = "Maintenance mode on"
    shown = json.dumps(
        [b.to_dict() for b in blocks.plan_message(run, blocks.RunFacts([]), approvers=MagicMock())],
        ensure_ascii=False,
    )
    assert "1. Maintenance mode on" in shown and "2. Step0" not in shown and "2. Step1" in shown
    assert "Step details" in shown and "api.example/m?access_token=…&amp;x=1" in shown
    assert "hunter2" not in shown and "abc123" not in shown
    assert t.mask_urls("https://u:p@h/x?signature=s&ok=1") == "https://…@h/x?signature=…&ok=1"


def test_failure_progress_outcome_status_and_rca_name_steps_in_words(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert "1. Stop workers · _prepare_" in text_of(plan)
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "failed", what="the run to fail")
    run = store.runs.find()[0]
    assert "step 3 (status) failed" in (run.outcome or "")  # the runner's own words
    wait_for(lambda: "step 3 (Status) failed" in text_of(card(sandbox)), what="the outcome")
    # the outbox may redraw the card before it posts the progress message into its thread
    progress = wait_for(
        lambda: next(
            (
                m
                for m in sandbox.slack.thread(CHANNEL, card(sandbox).ts)
                if m.text.startswith("Rollback progress")
            ),
            None,
        ),
        what="the progress message",
    )
    wait_for(
        lambda: "3. *Status* failed" in text_of(sandbox.slack.message(CHANNEL, progress.ts)),
        what="the progress in words",
    )
    answer = sandbox.person(ALICE).slash(f"status {run.incident_id}").text
    assert "step 3 (Status) failed" in answer and "2. Undo (succeeded)" in answer
    incident = store.incidents.get(run.incident_id)
    assert incident is not None
    rca = rca_template(
        incident, store.runs.find(incident_id=incident.id), store.events.of(incident.id)
    )
    assert "Step failed: Status" in rca and "step 3 (Status) failed" in rca


def test_outcome_names_not_run_steps_and_the_change_in_words() -> None:
    run = a_run(2, description="POST https://app.example/admin {}")
    run.plan[1]["name"] = "kubernetes.rollout_undo"
    run.plan[1]["label"] = "Roll back api to rev 3 (api:v1)"
    run.outcome = (
        "step 1 (step0) failed: refused. Not run: POST https://app.example/admin {}. "
        "Production now: rolled back (kubernetes.rollout_undo)."
    )
    said = outcome_in_words(run)
    assert "step 1 (Step0) failed" in said
    assert "Not run: Step0." in said and "rolled back (Roll back api to rev 3 (api:v1))" in said


def test_a_point_that_says_current_is_not_marked_current_twice() -> None:
    content = ModalContent(
        meta=ModalMeta(environment="prod", target="app", requester=ALICE, channel_id="C1"),
        target_line="deployment/voxflow-api",
        points=[
            RollbackPoint(ref="2", label="rev 2 (current)", is_current=True),
            RollbackPoint(ref="3", label="rev 3", is_current=True),
            RollbackPoint(ref="1", label="rev 1"),
        ],
        selected="1",
        checks=[],
        decision=decide(Answers()),
    )
    shown = json.dumps(rollback_modal(content).to_dict())
    assert 'rev 2 (current)"' in shown and "(current) (current)" not in shown
    assert "rev 3 (current)" in shown
