"""The builders keep every message within Slack's limits."""

from __future__ import annotations

from bot.persistence.store import StepView
from handlers import blocks, command_blocks
from handlers import text as t
from tests.fakes.runs import a_run, texts


def test_a_long_plan_is_shown_whole_over_several_sections() -> None:
    run = a_run(60, description="x" * 200)
    built = blocks.plan_message(run, blocks.RunFacts(approvals=[]), approvers=_approvers())
    assert len(built) <= t.MESSAGE_BLOCKS
    assert all(len(text) <= t.SECTION_LIMIT for text in texts(built))
    shown = "\n".join(texts(built))
    assert all(f"{i + 1}. Step{i} · _rollback_" in shown for i in range(60))
    assert all(f"{i + 1}. {'x' * 200}" in shown for i in range(60))  # the details


def test_long_output_is_cut_and_marked_for_a_file() -> None:
    record = StepView(0, "step0", "succeeded", 1, None, None, "ok", "y" * 10_000, {})
    built, was_cut = blocks.step_output({"position": 0, "name": "step0"}, record)
    assert was_cut
    assert all(len(text) <= t.SECTION_LIMIT for text in texts(built))
    assert t.CUT_MARK in texts(built)[1]


def test_short_output_is_not_cut() -> None:
    record = StepView(0, "step0", "succeeded", 1, None, None, "ok", "fine", {})
    _, was_cut = blocks.step_output({"position": 0, "name": "step0"}, record)
    assert not was_cut


def test_many_lines_are_split_over_sections_and_capped_at_fifty_blocks() -> None:
    built = command_blocks.lines_message("History", ["z" * 500] * 1000)
    assert len(built) == t.MESSAGE_BLOCKS
    assert all(len(text) <= t.SECTION_LIMIT for text in texts(built))


def test_approval_message_has_a_confirm_dialog_on_approve() -> None:
    built = blocks.plan_message(a_run(2), blocks.RunFacts(approvals=[]), approvers=_approvers())
    buttons = built[-1].to_dict()["elements"]
    assert [b["action_id"] for b in buttons] == ["approve_run", "reject_run", "cancel_run"]
    assert buttons[0]["confirm"]["title"]["text"] == "Approve this rollback?"


def test_mentions_leave_out_the_requester() -> None:
    mention = blocks.mention_approvers(_approvers(), requester="UALICE0001")
    assert mention == "<@UBOB000001> <!subteam^SDBAS00001>"


def _approvers():  # type: ignore[no-untyped-def]
    from bot.config import Approvers

    return Approvers(users=["UALICE0001", "UBOB000001"], groups=["SDBAS00001"])
