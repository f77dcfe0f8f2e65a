"""Break-glass is visible: approvers mentioned at once, a review assigned round-robin with a
Mark reviewed button (any approver but the requester), listed by /rollback status until done."""

from __future__ import annotations

from sandbox.harness import Sandbox
from sandbox.slack import Message
from tests.fakes.break_glass import break_glass, valid
from tests.fakes.config import ALICE, BOB, CAROL, CHANNEL, MALLORY
from tests.fakes.thread import text_of
from tests.fakes.waiting import wait_for


def buttons(message: Message) -> list[str]:
    return [
        e["action_id"] for b in message.blocks for e in b.get("elements", []) if "action_id" in e
    ]


def told(sandbox: Sandbox, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals(CHANNEL) if e.user == user]


def test_break_glass_mentions_approvers_at_once_and_assigns_a_review(sandbox: Sandbox) -> None:
    review = break_glass(sandbox, sandbox.person(ALICE))
    said = text_of(review)
    assert review.thread_ts is not None  # in the incident thread
    assert f"<@{ALICE}> rolled back" in said and "without a second approver" in said
    assert f"<@{BOB}>" in said and f"<@{CAROL}>" in said and "<!subteam^SDBAS00001>" in said
    assert f"assigned to <@{BOB}>" in said  # the first approver in config order
    assert buttons(review) == ["mark_reviewed"] and valid(review.blocks)
    run = sandbox.process.store.runs.find()[0]
    assert run.break_glass and run.state in ("approved", "running", "succeeded")
    status = sandbox.person(MALLORY).slash("status").json()
    assert valid(status["blocks"])
    assert "Break-glass rollbacks awaiting review" in str(status)
    assert run.incident_id in str(status) and f"review assigned to <@{BOB}>" in str(status)


def test_only_an_approver_other_than_the_requester_marks_it_reviewed(sandbox: Sandbox) -> None:
    review = break_glass(sandbox, sandbox.person(ALICE))
    store = sandbox.process.store
    run = store.runs.find()[0]
    sandbox.person(ALICE).click(CHANNEL, review.ts, "mark_reviewed")
    wait_for(lambda: told(sandbox, ALICE), what="the requester's refusal")
    assert "another approver must review it" in told(sandbox, ALICE)[0]
    sandbox.person(MALLORY).click(CHANNEL, review.ts, "mark_reviewed")
    wait_for(lambda: told(sandbox, MALLORY), what="the non-approver's refusal")
    assert "Only an approver of prod can review" in told(sandbox, MALLORY)[0]
    assert (stored := store.reviews.get(run.id)) is not None and stored.reviewed_at is None

    late = sandbox.person(BOB).click_payload(CHANNEL, review.ts, "mark_reviewed")  # a copy
    sandbox.person(CAROL).click(CHANNEL, review.ts, "mark_reviewed")  # not the assignee: may
    done = wait_for(
        lambda: (
            "Mandatory review done" in text_of(m := sandbox.slack.message(CHANNEL, review.ts)) and m
        ),
        what="the review marked done",
    )
    assert f"reviewed by <@{CAROL}>" in text_of(done) and "<!date^" in text_of(done)
    assert buttons(done) == [] and valid(done.blocks)
    assert [e.actor for e in store.events.of(run.incident_id) if e.kind == "run.reviewed"] == [
        CAROL
    ]
    assert "awaiting review" not in str(sandbox.person(MALLORY).slash("status").json())
    one = sandbox.person(MALLORY).slash(f"status {run.incident_id}").json()
    assert f"Break-glass: reviewed by <@{CAROL}>" in str(one)

    sandbox.platform.interaction(late)  # the button on an older copy of the message
    wait_for(lambda: told(sandbox, BOB), what="the late click's answer")
    assert f"already reviewed by <@{CAROL}>" in told(sandbox, BOB)[0]
    assert len([e for e in store.events.of(run.incident_id) if e.kind == "run.reviewed"]) == 1


def test_reviews_are_assigned_round_robin_never_to_the_requester(sandbox: Sandbox) -> None:
    first = break_glass(sandbox, sandbox.person(ALICE), "app prod")
    second = break_glass(sandbox, sandbox.person(ALICE), "db prod")
    assert f"assigned to <@{BOB}>" in text_of(first)
    assert f"assigned to <@{CAROL}>" in text_of(second)
    store = sandbox.process.store
    reviewers = sorted(r.reviewer for r in store.reviews.pending())
    assert reviewers == sorted([BOB, CAROL])


def test_a_break_glass_by_an_approver_is_reviewed_by_another(sandbox: Sandbox) -> None:
    review = break_glass(sandbox, sandbox.person(BOB))
    assert f"assigned to <@{CAROL}>" in text_of(review)
    assert f"<@{BOB}> rolled back" in text_of(review)
