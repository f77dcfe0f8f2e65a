"""Resume runs the approved plan, and `always` steps run on every path.

A crash is reproduced by leaving the database as a killed process leaves it:
the run `running`, earlier steps finished, the interrupted step `running`, the
lease held by an owner that no longer renews it (tests/bot/test_runner.py and
test_runner_crash.py kill real processes for the same thing).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import RollbackConfig, parse_config
from bot.domain.plans import StoredStep
from bot.execution.planner import Planner
from bot.execution.runner import stored_steps
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store
from sandbox.web import Reply, WebStub
from tests.fakes.config import Clock, config_dict
from tests.fakes.rows import set_run_fields
from tests.fakes.runners import approved_run, make_runner, states
from tests.fakes.targets import PlanOnlyTarget, ScriptedTarget, script_log, write_script


def interrupt(store: Store, workflow: Workflow, run: Run, *, finished: int) -> Run:
    """Leave `run` as a process killed inside step `finished` (0-based) leaves it."""
    assert store.leases.claim(run.id, owner="dead-process", seconds=1)
    running = workflow.start(run)
    for stored in stored_steps(running)[: finished + 1]:
        done = stored.position < finished
        store.steps.save(
            running,
            position=stored.position,
            name=stored.name,
            event_kind="step.succeeded" if done else "step.running",
            state="succeeded" if done else "running",
            attempts=1,
        )
    # the dead owner's lease ran out (leases are timed on the database's clock)
    set_run_fields(store, run.id, lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    fresh = store.runs.get(run.id)
    assert fresh is not None
    return fresh


def outcome_of(store: Store, run_id: str) -> str:
    run = store.runs.get(run_id)
    assert run is not None and run.state in ("succeeded", "failed")
    return run.outcome


def test_resume_does_not_plan_again_from_the_live_system(
    store: Store,
    workflow: Workflow,
    config: RollbackConfig,
    planner: Planner,
    script: Path,
    clock: Clock,
) -> None:
    run = approved_run(workflow, planner)
    interrupt(store, workflow, run, finished=1)
    write_script(script, _plan_raises="the deployment moved on", _label="a newer revision")
    runner, progress = make_runner(store, workflow, config, planner)
    assert runner.run_pending() == [run.id]
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome
    assert script_log(script) == ["undo", "status", "start_workers"]
    assert progress.calls[0] == ("run_started", True)


def test_resume_is_announced_with_the_process_that_took_over(
    store: Store,
    workflow: Workflow,
    config: RollbackConfig,
    planner: Planner,
    clock: Clock,
) -> None:
    run = approved_run(workflow, planner)
    interrupt(store, workflow, run, finished=1)
    runner, _ = make_runner(store, workflow, config, planner, owner="second-process")
    runner.run_pending()
    resumed = [e for e in store.events.of(run.incident_id) if e.kind == "run.resumed"]
    assert len(resumed) == 1
    assert resumed[0].detail == {"by": "second-process", "previous_owner": "dead-process"}


def test_a_target_without_restore_is_planned_again_and_its_steps_taken_by_name(
    store: Store, workflow: Workflow, config: RollbackConfig, script: Path, clock: Clock
) -> None:
    planner = Planner(factory=lambda params: PlanOnlyTarget(script))
    run = approved_run(workflow, planner)
    interrupt(store, workflow, run, finished=1)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome
    assert script_log(script) == ["undo", "status", "start_workers"]


def test_a_plan_that_cannot_be_rebuilt_on_resume_still_runs_the_always_steps(
    store: Store, workflow: Workflow, config: RollbackConfig, script: Path, clock: Clock
) -> None:
    # The interrupted step and the one after it cannot be rebuilt: the interrupted one is
    # marked, and the `always` step that can be rebuilt still runs.
    run = approved_run(workflow, Planner(factory=lambda params: ScriptedTarget(script)))
    interrupt(store, workflow, run, finished=1)
    write_script(script, _restore_raises=["undo", "status"])
    runner, _ = make_runner(
        store, workflow, config, Planner(factory=lambda params: ScriptedTarget(script))
    )
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed" and final.needs_manual
    assert script_log(script) == ["start_workers"]
    assert states(store, run.id) == [
        ("stop_workers", "succeeded"),
        ("undo", "interrupted"),
        ("start_workers", "succeeded"),
    ]
    outcome = final.outcome
    assert "step 2 (undo) could not be rebuilt: undo cannot be restored (scripted)" in outcome
    assert outcome.count("Manual intervention required") == 1
    assert "4. start_workers (succeeded)" in outcome


def test_nothing_can_be_rebuilt_and_planning_fails_the_run_stops_for_a_person(
    store: Store, workflow: Workflow, config: RollbackConfig, script: Path, clock: Clock
) -> None:
    planner = Planner(factory=lambda params: PlanOnlyTarget(script))
    run = approved_run(workflow, planner)
    interrupt(store, workflow, run, finished=1)
    write_script(script, _plan_raises="kubeconfig vanished")
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "failed" and final.needs_manual
    assert script_log(script) == []
    record = {s.name: s for s in store.steps.of(run.id)}
    assert record["undo"].state == "interrupted"
    assert record["start_workers"].state == "not run"
    assert "could not be rebuilt: OSError: kubeconfig vanished" in final.outcome
    assert "Production now:" in final.outcome
    assert "not restarted: start_workers" in final.outcome


def test_an_interrupted_step_not_safe_to_repeat_is_marked_and_always_steps_run(
    store: Store,
    workflow: Workflow,
    config: RollbackConfig,
    planner: Planner,
    script: Path,
    clock: Clock,
) -> None:
    write_script(script, _not_idempotent=["undo"])
    run = approved_run(workflow, planner)
    interrupt(store, workflow, run, finished=1)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    assert script_log(script) == ["start_workers"]
    assert states(store, run.id) == [
        ("stop_workers", "succeeded"),
        ("undo", "interrupted"),
        ("start_workers", "succeeded"),
    ]
    outcome = outcome_of(store, run.id)
    assert outcome.count("Manual intervention required") == 1
    rest = outcome.partition("Ran: ")[2]
    ran_part, _, rest = rest.partition("Not run: ")
    not_run = rest.partition("Production now:")[0]
    assert "1. stop_workers (succeeded)" in ran_part
    assert "2. undo (interrupted)" in ran_part
    assert "4. start_workers (succeeded)" in ran_part
    assert not_run.startswith("status: scripted step.")
    assert "stop_workers" not in not_run and "start_workers" not in not_run
    assert "the rollback change may be half done (undo interrupted)" in outcome


def test_a_failure_before_a_crash_still_holds_after_the_resume(
    store: Store,
    workflow: Workflow,
    config: RollbackConfig,
    planner: Planner,
    script: Path,
    clock: Clock,
) -> None:
    # step 2 failed, then the process died before the always step: the resume runs
    # start_workers only, never status.
    run = approved_run(workflow, planner)
    running = interrupt(store, workflow, run, finished=1)
    store.steps.save(
        running, position=1, name="undo", event_kind="step.failed", state="failed", summary="boom"
    )
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    assert script_log(script) == ["start_workers"]
    outcome = outcome_of(store, run.id)
    assert outcome.startswith("boom.")
    assert "Not run: status: scripted step." in outcome


def test_a_failure_lists_every_step_that_ran_and_never_says_not_run_nothing(
    store: Store, workflow: Workflow, config: RollbackConfig, planner: Planner, script: Path
) -> None:
    write_script(script, status=["permanent"])
    run = approved_run(workflow, planner)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    outcome = outcome_of(store, run.id)
    assert "Not run" not in outcome
    assert "3. status (failed)" in outcome
    assert "rolled back (undo)" in outcome


# environment steps --------------------------------------------------------------


def full_config(web: WebStub, **extra: Any) -> RollbackConfig:
    raw = config_dict(
        maintenance={"url": f"{web.url}/maintenance", "token": {"env": "MAINT_TOKEN"}},
        health_url=f"{web.url}/health",
        communications={
            "status_page": {"url": f"{web.url}/status"},
            "internal_webhook": {"url": f"{web.url}/hooks/T000/B000/SECRETPART"},
            "customer_email": {"url": f"{web.url}/email", "to": "customers@example.com"},
        },
        **extra,
    )
    return parse_config(raw, path=Path("test.yml"))


def test_environment_steps_are_stored_without_urls_or_tokens_and_restore_the_same(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebStub() as web:
        config = full_config(web)
        env = config.environment("prod")
        planner = Planner(factory=lambda params: ScriptedTarget(script))
        plan = planner.build(env_name="prod", env=env, target="app", point="1")
        stored = [StoredStep.from_json(json.loads(json.dumps(s))) for s in plan.as_json()]
        assert [s.source for s in stored] == [
            None,
            "app",
            "app",
            "app",
            None,
            None,
            "app",
            None,
            None,
            None,
        ]
        text = json.dumps([s.spec for s in stored])
        assert web.url not in text and "SECRETPART" not in text and "MAINT_TOKEN" not in text
        restored = planner.restore(
            env_name="prod", env=env, target="app", point="1", force=False, stored=stored
        )
        assert all(r.action is not None for r in restored), [r.problem for r in restored]
        assert [r.action.describe() for r in restored if r.action] == [
            p.action.describe() for p in plan.steps
        ]
        assert [r.action.idempotent for r in restored if r.action] == [
            p.action.idempotent for p in plan.steps
        ]


def test_resume_after_the_rollback_step_turns_maintenance_off_and_workers_back_on(
    store: Store, script: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINT_TOKEN", "t0ken")
    with WebStub() as web:
        for path in ("/maintenance", "/health", "/status", "/hooks/T000/B000/SECRETPART", "/email"):
            web.route("POST" if path != "/health" else "GET", path, Reply(200, json={"ok": True}))
        config = full_config(web)
        workflow = Workflow(store=store, config=config)
        planner = Planner(factory=lambda params: ScriptedTarget(script))
        write_script(script, _not_idempotent=["undo"])
        run = approved_run(workflow, planner)
        interrupt(store, workflow, run, finished=2)  # inside undo
        write_script(script, _not_idempotent=["undo"], _plan_raises="the world moved")
        runner, _ = make_runner(store, workflow, config, planner)
        runner.run_pending()
        final = store.runs.get(run.id)
        assert final is not None and final.state == "failed"
        bodies = [r.json() for r in web.calls("POST", "/maintenance")]
        assert bodies == [{"enabled": False}]
        assert script_log(script) == ["start_workers"]
        assert web.calls("GET", "/health") == []
        assert "maintenance mode is off again" in final.outcome
        assert "3. undo (interrupted)" in final.outcome
        not_run = final.outcome.partition("Not run:")[2].partition("Production now:")[0]
        assert "status" in not_run and "undo" not in not_run


def test_a_run_stored_before_steps_carried_their_spec_is_resumed_by_planning_again(
    store: Store,
    workflow: Workflow,
    config: RollbackConfig,
    planner: Planner,
    script: Path,
) -> None:
    run = approved_run(workflow, planner)
    old_form = [{k: v for k, v in step.items() if k not in ("source", "spec")} for step in run.plan]
    set_run_fields(store, run.id, plan=old_form)
    fresh = store.runs.get(run.id)
    assert fresh is not None
    interrupt(store, workflow, fresh, finished=1)
    runner, _ = make_runner(store, workflow, config, planner)
    runner.run_pending()
    final = store.runs.get(run.id)
    assert final is not None and final.state == "succeeded", final.outcome
    assert script_log(script) == ["undo", "status", "start_workers"]
