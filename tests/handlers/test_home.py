"""The App Home tab: active incidents, approvals waiting for the viewer, unreviewed
break-glass runs, each target's recent rollbacks with their time to recover; refreshed for
recent viewers when a run changes."""

from __future__ import annotations

import json

from slack_sdk.models.blocks import Block, SectionBlock
from slack_sdk.models.views import View

from handlers.home_blocks import SECTIONS, HomeContent, home_view_blocks
from sandbox.harness import Sandbox
from tests.fakes.break_glass import break_glass
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE, MALLORY
from tests.fakes.home import open_home, section, shown
from tests.fakes.thread import request_rollback
from tests.fakes.waiting import wait_for


def test_home_shows_each_person_what_waits_for_them(sandbox: Sandbox) -> None:
    request_rollback(sandbox, sandbox.person(ALICE))
    run = sandbox.process.store.runs.find()[0]
    bob = open_home(sandbox, BOB)
    assert run.incident_id in section(bob, "Active incidents")
    assert run.incident_id in section(bob, "Waiting for your approval")
    dave = open_home(sandbox, DAVE)  # an approver through the user group
    assert run.incident_id in section(dave, "Waiting for your approval")
    for user in (ALICE, MALLORY):  # the requester; not an approver
        tab = open_home(sandbox, user)
        assert run.incident_id in section(tab, "Active incidents")
        assert "Nothing waits for your approval" in section(tab, "Waiting for your approval")
    # The plan message can be seen a moment before its thread is recorded with the run; the
    # tab is published again once it is, with the link.
    wait_for(
        lambda: "open thread" in shown(sandbox.slack.home(BOB).view),
        what="the thread's link in Bob's home tab",
    )


def test_home_lists_unreviewed_break_glass_the_assignees_first(sandbox: Sandbox) -> None:
    break_glass(sandbox, sandbox.person(ALICE))
    run = sandbox.process.store.runs.find()[0]
    bob = section(open_home(sandbox, BOB), "Break-glass rollbacks awaiting review")
    assert f"*Yours:* :rotating_light: *{run.incident_id}*" in bob
    mallory = section(open_home(sandbox, MALLORY), "Break-glass rollbacks awaiting review")
    assert run.incident_id in mallory and "*Yours:*" not in mallory


def test_home_is_refreshed_with_the_time_to_recover_when_a_rollback_ends(
    sandbox: Sandbox,
) -> None:
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    before = section(open_home(sandbox, BOB), "Recent rollbacks and time to recover")
    assert "*app* in prod: no rollbacks yet" in before
    published = len(sandbox.slack.calls_to("views.publish"))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the rollback")
    run = store.runs.find()[0]
    tab = wait_for(  # refreshed without Bob opening it again
        lambda: "recovered in" in (text := shown(sandbox.slack.home(BOB).view)) and text,
        what="the refreshed home tab",
    )
    history = section(tab, "Recent rollbacks and time to recover")
    assert f"*{run.incident_id}* recovered in" in history
    assert run.incident_id not in section(tab, "Active incidents")
    assert "Nothing waits for your approval" in tab
    messages = len(store.outbox.messages(run.id))
    refreshes = len(sandbox.slack.calls_to("views.publish")) - published
    assert 1 <= refreshes < messages  # coalesced; a step's progress refreshes nothing


def test_a_section_is_added_without_touching_the_others() -> None:
    def drills(content: HomeContent) -> list[Block]:
        return [SectionBlock(text=f"drills for {content.viewer}")]

    content = HomeContent(viewer=BOB)
    plain = home_view_blocks(content)
    more = home_view_blocks(content, sections=(*SECTIONS, drills))
    assert more[: len(plain)] == plain and len(more) == len(plain) + 1
    View(type="home", blocks=more).validate_json()  # Slack's limits, checked by slack_sdk
    said = json.dumps([b.to_dict() for b in plain])
    assert (
        "No rollback is waiting, running, or failed and unresolved." in said
        and "No targets configured." in said
    )
