"""From → to versions, in the target's words, wherever a person decides or looks back."""

from __future__ import annotations

from collections.abc import Callable

from bot.application.timeline import from_to
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.runs import a_run
from tests.fakes.thread import card, request_rollback, text_of
from tests.fakes.waiting import wait_for

FROM_TO = "from rev 2 to rev 1"


def test_versions_on_card_plan_confirmation_progress_status_history_and_rca(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    assert f"*Rollback plan* in *prod*: *app* {FROM_TO}" in text_of(plan)
    assert f"*Rollback:* *app* {FROM_TO}" in text_of(card(sandbox))
    approve = next(b for b in plan.blocks if b.get("block_id") == "approval_buttons")
    confirm = approve["elements"][0]["confirm"]["text"]["text"]
    assert confirm == f"Roll back app in prod {FROM_TO}: 4 steps, starting now. Verdict: safe."
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the run")
    wait_for(lambda: sandbox.slack.files(), what="the RCA template")
    thread = sandbox.slack.thread(CHANNEL, card(sandbox).ts)
    progress = next(m for m in thread if m.text.startswith("Rollback progress"))
    assert f"*app* {FROM_TO}" in text_of(sandbox.slack.message(CHANNEL, progress.ts))
    incident_id = store.runs.find()[0].incident_id
    assert FROM_TO in sandbox.person(ALICE).slash(f"status {incident_id}").text
    assert FROM_TO in sandbox.person(ALICE).slash("history app prod").text
    rca, chart = sandbox.slack.files()  # the template and its timeline chart, one upload
    assert chart.name.endswith("-timeline.png")
    assert f"- **Versions**: app {FROM_TO}" in rca.text
    assert "to `1`" not in str(sandbox.slack.calls)


def test_a_run_without_recorded_versions_names_its_point() -> None:
    run = a_run(1)
    assert from_to(run) == "to 1"
    run.from_version, run.to_version = "rev 4 (v1.2.4)", "rev 3 (v1.2.3)"
    assert from_to(run) == "from rev 4 (v1.2.4) to rev 3 (v1.2.3)"
