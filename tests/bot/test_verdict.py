"""The verdict in the approval use case: hashed with the plan, blocking Approve, overridden loudly.

The targets here are scripted (tests/fakes/targets.py) with evidence read from
a file the test writes, so each case sets exactly the finding it needs; the
findings of the real targets are tested against the real parts in
tests/actions/test_*_verdict.py and tests/bot/test_verdict_schema.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from actions.base import Check, Finding, Level
from bot.application.flows import Flows
from bot.domain.decision import Answers, Recommendation, decide, with_verdict
from bot.domain.verdict import Verdict
from bot.execution.assessor import Assessor
from bot.execution.planner import Planner
from bot.execution.runner import Runner
from bot.execution.workflow import BREAK_GLASS_PHRASE, Refused
from bot.persistence.store import Store
from handlers.blocks import RunFacts, plan_message
from handlers.ids import Action
from tests.fakes.config import BOB, Clock
from tests.fakes.flows import RecordingThread, make_flows, request
from tests.fakes.runners import Recorder
from tests.fakes.verdicts import BLOCKED, JudgedTarget, judge

SAFE = [["ok", "previous revision exists", ""]]


@pytest.fixture
def judged(script: Path) -> Planner:
    judge(script, SAFE)
    return Planner(factory=lambda params: JudgedTarget(script))


@pytest.fixture
def thread(store: Store) -> RecordingThread:
    return RecordingThread(store=store)


@pytest.fixture
def flows(store: Store, judged: Planner, thread: RecordingThread) -> Flows:
    return make_flows(store, judged, thread)


def plan_hash(flows: Flows) -> str:
    env = flows.config.environment("prod")
    return flows.planner.build(env_name="prod", env=env, target="app", point="1").hash


def test_the_verdict_is_part_of_the_plan_hash_but_not_its_moving_words(
    flows: Flows, script: Path
) -> None:
    first = plan_hash(flows)
    judge(script, [["loss", "writes after 03:00 are lost: about 10 row changes", "after 03:00"]])
    lossy = plan_hash(flows)
    judge(script, [["loss", "writes after 03:00 are lost: about 90 row changes", "after 03:00"]])
    assert plan_hash(flows) == lossy != first


def test_changed_evidence_invalidates_an_approval(
    flows: Flows, store: Store, script: Path, thread: RecordingThread
) -> None:
    run = flows.open_incident(request()).run
    judge(script, [["risky", "Argo CD application vf in argocd owns it", "owner argocd vf"]])
    with pytest.raises(Refused) as refused:
        flows.approve(run.id, user=BOB)
    assert str(refused.value).startswith(
        "the plan changed since it was requested (app's verdict was safe, is now risky: "
        "Argo CD application vf in argocd owns it)"
    )
    assert (store.runs.get(run.id) or run).state == "requested"
    assert thread.stale_told == [run.id]


def test_a_blocked_verdict_refuses_approve_and_changes_nothing(
    flows: Flows, store: Store, script: Path
) -> None:
    judge(script, BLOCKED)
    run = flows.open_incident(request()).run
    assert [v.level for v in (run.verdicts or ())] == [Level.BLOCKED]
    with pytest.raises(Refused, match=r"Approve is disabled: the rollback is app blocked: image"):
        flows.approve(run.id, user=BOB)
    after = store.runs.get(run.id)
    assert after is not None and after.state == "requested" and after.approved_at is None
    assert store.approvals.of(after, since=after.created_at) == []


def test_break_glass_overrides_a_blocked_verdict_and_is_recorded(
    flows: Flows, store: Store, script: Path
) -> None:
    judge(script, BLOCKED)
    opened = flows.open_incident(request(break_glass=True, confirmation=BREAK_GLASS_PHRASE))
    assert opened.run.state == "approved"
    overrides = [e for e in store.events.of(opened.incident.id) if e.kind == "verdict.overridden"]
    assert len(overrides) == 1
    assert overrides[0].actor == opened.run.requester
    assert overrides[0].detail["verdict"].startswith("app blocked: image cannot be pulled")
    assert overrides[0].detail["plan_hash"] == opened.run.plan_hash


def test_a_request_that_is_not_blocked_records_no_override(flows: Flows, store: Store) -> None:
    opened = flows.open_incident(request(break_glass=True, confirmation=BREAK_GLASS_PHRASE))
    assert not [e for e in store.events.of(opened.incident.id) if e.kind == "verdict.overridden"]


def test_another_incidents_lock_makes_the_verdict_risky(flows: Flows) -> None:
    first = flows.open_incident(request(target="db", point=None))
    second = flows.open_incident(request(target="app"))
    app = (second.run.verdicts or ())[0]
    assert app.level == Level.RISKY
    assert f"{first.incident.id} holds db in this environment" in app.headline


def test_the_plan_message_shows_the_verdict_and_no_approve_when_blocked(
    flows: Flows, store: Store, script: Path
) -> None:
    judge(script, BLOCKED)
    run = flows.open_incident(request()).run
    env = flows.config.environment("prod")
    blocks = [b.to_dict() for b in plan_message(run, RunFacts([]), approvers=env.approvers)]
    text = json.dumps(blocks)
    assert "Reversibility verdict" in text and "Approve is disabled" in text
    assert "&lt;registry&gt;" in text and "<registry>" not in text
    actions = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert Action.APPROVE.value not in actions and Action.REJECT.value in actions


def test_a_safe_verdict_keeps_the_approve_button(flows: Flows) -> None:
    run = flows.open_incident(request()).run
    env = flows.config.environment("prod")
    blocks = [b.to_dict() for b in plan_message(run, RunFacts([]), approvers=env.approvers)]
    actions = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert Action.APPROVE.value in actions


def verdict(level: Level, text: str, suggestion: str = "") -> Verdict:
    return Verdict("app", level, (Finding(level, text),), suggestion)


def test_the_recommendation_says_fix_forward_when_the_rollback_cannot_restore_service() -> None:
    decision = decide(Answers(functional=False, data_at_risk=False, severe_impact=True))
    assert decision.recommendation == Recommendation.ROLLBACK_RECOMMENDED
    stuck = with_verdict(decision, [verdict(Level.BLOCKED, "deployment not paused fails")])
    assert stuck.recommendation == Recommendation.FIX_FORWARD
    assert stuck.reason.endswith(
        "But the rollback cannot restore service (app blocked: deployment not paused fails). "
        "Fix forward is the safer move."
    )
    full = with_verdict(decision, [verdict(Level.RISKY, "migration 002 breaks", "full rollback")])
    assert full.recommendation == Recommendation.ROLLBACK_RECOMMENDED
    assert "Mind the verdict: app risky: migration 002 breaks — full rollback" in full.reason
    assert with_verdict(decision, [verdict(Level.OK, "fine")]) == decision
    lossy = with_verdict(decision, [verdict(Level.LOSS, "writes after 03:00 are lost")])
    assert lossy.recommendation == Recommendation.ROLLBACK_RECOMMENDED
    assert lossy.reason.endswith(
        "Data lost: app safe with data loss: writes after 03:00 are lost."
    )  # the form's summary says the data-loss window where people decide


def test_the_incident_carries_the_advice(flows: Flows, store: Store, script: Path) -> None:
    judge(script, BLOCKED)
    opened = flows.open_incident(request())
    incident = store.incidents.get(opened.incident.id)
    assert incident is not None and incident.recommendation == "fix_forward"
    assert "Fix forward is the safer move." in incident.reason


def test_an_incident_opened_on_a_neighbour_leaves_an_earlier_plan_approvable(
    flows: Flows, store: Store
) -> None:
    """In an outage several targets are requested at once: the later request's lock is shown
    on the earlier plan, but the earlier approval is for what its plan does, which is the same."""
    earlier = flows.open_incident(request(target="app")).run
    later = flows.open_incident(request(target="db", point=None))
    assert flows.approve(earlier.id, user=BOB).started
    final = store.runs.get(earlier.id)
    assert final is not None and final.state == "approved"
    env = flows.config.environment("prod")
    replanned = flows.planner.build(
        env_name="prod",
        env=env,
        target="app",
        point="1",
        holders=lambda name: later.incident.id if name == "db" else None,
    )
    (app,) = replanned.verdicts
    assert app.level == Level.RISKY and f"{later.incident.id} holds db" in app.headline
    assert replanned.hash == earlier.plan_hash


def test_a_run_approved_beside_another_incidents_lock_still_runs(
    flows: Flows, store: Store, judged: Planner
) -> None:
    """The runner holds the plan to the approved hash with the same view of the locks."""
    flows.open_incident(request(target="db", point=None))
    run = flows.open_incident(request(target="app")).run
    assert (run.verdicts or ())[0].level == Level.RISKY
    assert flows.approve(run.id, user=BOB).started
    runner = Runner(
        store=store,
        workflow=flows.workflow,
        config=flows.config,
        planner=judged,
        progress=Recorder(),
        sleep=lambda s: None,
    )
    assert run.id in runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome


def test_monitoring_does_not_approve_a_blocked_rollback_by_itself(
    store: Store, judged: Planner, thread: RecordingThread, script: Path, clock: Clock
) -> None:
    judge(script, BLOCKED)
    flows = make_flows(store, judged, thread, auto_rollback=True, veto_seconds=60)
    opened = flows.open_from_alert(environment="prod", target="app", reason="error rate 80%")
    assert opened.run.auto_approve_at is not None
    clock.advance(seconds=61)
    assert flows.auto_approve_due() == []
    after = store.runs.get(opened.run.id)
    assert after is not None and after.state == "requested" and after.auto_approve_at is None
    withheld = [
        e for e in store.events.of(opened.incident.id) if e.kind == "run.auto_approval_withheld"
    ]
    assert len(withheld) == 1 and withheld[0].detail["verdict"].startswith("app blocked: image")
    assert flows.auto_approve_due() == []  # said once
    assert len([e for e in store.events.of(opened.incident.id) if e.kind == withheld[0].kind]) == 1


class _FailingCheck:
    """A target without evidence of its own whose pre-rollback check fails (a load balancer
    with one of three targets unhealthy)."""

    def checks(self, ref: str | None) -> list[Check]:
        return [Check("targets healthy", False, "1 of 3 targets not healthy: 10.0.0.3 unhealthy")]


@pytest.mark.parametrize(
    ("force", "level", "text"),
    [
        (False, Level.BLOCKED, "targets healthy fails: 1 of 3 targets not healthy"),
        (True, Level.RISKY, "not healthy: 10.0.0.3 unhealthy (forced: the rollback runs anyway)"),
    ],
)
def test_a_failing_check_blocks_unless_the_plan_is_forced_past_it(
    flows: Flows, force: bool, level: Level, text: str
) -> None:
    env = flows.config.environment("prod")
    assessor = Assessor(lambda params: cast(Any, _FailingCheck()), force=force)
    (verdict,) = [v for v in assessor.assess(env, "app", "1") if v.target == "app"]
    assert verdict.level is level and text in verdict.headline
