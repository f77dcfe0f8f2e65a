"""The small items of issue 15, each reproduced through the served app and checked fixed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.harness import Sandbox
from sandbox.platform import Person
from tests.fakes.break_glass import valid
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.targets import write_script
from tests.fakes.thread import ANSWERS, card, request_rollback, text_of
from tests.fakes.waiting import wait_for


def open_form(sandbox: Sandbox, person: Person, text: str = "app prod") -> str:
    """Type the command and wait for the filled form; return its view id."""
    assert person.slash(text).status_code == 200
    view_id = person.opened_view()
    wait_for(
        lambda: any(b.get("block_id") == "severity" for b in blocks_of(sandbox, view_id)),
        what="the form",
    )
    return view_id


def blocks_of(sandbox: Sandbox, view_id: str) -> list[dict[str, Any]]:
    return list(sandbox.slack.view(view_id).view["blocks"])


def block(sandbox: Sandbox, view_id: str, block_id: str) -> dict[str, Any] | None:
    return next((b for b in blocks_of(sandbox, view_id) if b.get("block_id") == block_id), None)


def recommendation(sandbox: Sandbox, view_id: str) -> str:
    assert valid(blocks_of(sandbox, view_id))
    found = block(sandbox, view_id, "recommendation")
    return str(found["text"]["text"]) if found else ""


def test_critical_with_a_fix_forward_answer_says_they_disagree(sandbox: Sandbox) -> None:
    alice = sandbox.person(ALICE)
    view_id = open_form(sandbox, alice)
    alice.choose(view_id, "severity", "critical")
    alice.choose(view_id, "q_functional", "yes")
    alice.choose(view_id, "q_fixable_quickly", "yes")
    said = wait_for(
        lambda: "Fix forward" in (r := recommendation(sandbox, view_id)) and r,
        what="the fix-forward recommendation",
    )
    assert "the table says: automatic rollback" not in said
    assert "respond immediately" in said and "within immediate" not in said
    assert "Critical usually means automatic rollback" in said
    assert "check the severity or the answers" in said
    alice.choose(view_id, "q_functional", "no")
    alice.choose(view_id, "q_data_at_risk", "yes")
    agreed = wait_for(
        lambda: "Immediate rollback" in (r := recommendation(sandbox, view_id)) and r,
        what="the rollback recommendation",
    )
    assert "the table says: automatic rollback" in agreed and "usually means" not in agreed


def test_fixable_quickly_is_optional_once_the_system_is_not_functional(
    sandbox: Sandbox,
) -> None:
    alice = sandbox.person(ALICE)
    view_id = open_form(sandbox, alice)
    alice.choose(view_id, "q_functional", "yes")
    wait_for(
        lambda: (b := block(sandbox, view_id, "q_fixable_quickly")) and not b.get("optional"),
        what="fixable quickly to be asked",
    )
    alice.choose(view_id, "q_fixable_quickly", "no")
    alice.choose(view_id, "q_functional", "no")
    wait_for(
        lambda: (b := block(sandbox, view_id, "q_fixable_quickly")) and b.get("optional"),
        what="fixable quickly to become optional",
    )
    data = block(sandbox, view_id, "q_data_at_risk")
    assert data is not None and not data.get("optional")  # the next question on the path


def test_typing_emergency_without_ticking_break_glass_is_a_field_error(
    sandbox: Sandbox,
) -> None:
    alice = sandbox.person(ALICE)
    view_id = open_form(sandbox, alice)
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    alice.choose(view_id, "confirm_text", "EMERGENCY")
    body = alice.submit(view_id).json()
    assert body["response_action"] == "errors"
    assert "Tick Break-glass" in body["errors"]["options"]
    assert sandbox.process.store.runs.find() == []


def test_force_is_offered_only_where_it_changes_something(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(
        targets={
            "db": {"kind": "database", "connection": {"dbname": "v"}, "backups": "/backups"},
            "web": {"kind": "docker", "container": "web", "image": "registry/web"},
        }
    )
    alice = sandbox.person(ALICE)
    db = open_form(sandbox, alice, "db prod")
    options = block(sandbox, db, "options")
    values = [o["value"] for o in options["element"]["options"]] if options else []
    assert "force" not in values  # a database rollback has no use for it
    web = open_form(sandbox, alice, "web prod")
    options = block(sandbox, web, "options")
    assert options is not None
    force = next(o for o in options["element"]["options"] if o["value"] == "force")
    assert "stopped container" in force["text"]["text"]


def test_a_failed_run_says_manual_intervention_once_and_no_empty_not_run(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, status=["permanent"])
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "failed", what="the failure")
    wait_for(lambda: sandbox.slack.files(), what="the end of the thread")
    for message in sandbox.slack.thread(CHANNEL, card(sandbox).ts):
        assert valid(message.blocks)
        for line in text_of(message).splitlines():
            assert line.lower().count("manual intervention required") <= 1, line
        assert "Not run: nothing" not in text_of(message)


def test_status_and_history_lines_link_to_their_threads(sandbox: Sandbox) -> None:
    request_rollback(sandbox, sandbox.person(ALICE))
    store = sandbox.process.store
    run = wait_for(lambda: (r := store.runs.find()[0]).slack.get("thread_ts") and r, what="thread")
    link = f"https://slack.com/archives/{CHANNEL}/p{run.slack['thread_ts'].replace('.', '')}"
    for text in ("status", f"status {run.incident_id}", "history app prod"):
        answer = sandbox.person(BOB).slash(text).json()
        assert valid(answer["blocks"])
        said = str(answer)
        assert f"<{link}|thread>" in said, text
