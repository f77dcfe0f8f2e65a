"""Runs of different targets progress in parallel in one process; a stuck one holds nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bot.config import RollbackConfig, parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store, TargetBusy
from tests.fakes.config import ALICE, BOB, Clock, config_dict
from tests.fakes.runners import Recorder
from tests.fakes.targets import ScriptedTarget, script_log, write_script


@pytest.fixture
def two_envs() -> RollbackConfig:
    raw = config_dict()
    prod = raw["environments"]["prod"]
    staging = {**prod, "targets": {**prod["targets"]}}
    staging["targets"]["app"] = {**prod["targets"]["app"], "namespace": "voxflow-staging"}
    raw["environments"]["staging"] = staging
    return parse_config(raw, path=Path("test.yml"))


def approve(workflow: Workflow, planner: Planner, env_name: str) -> Run:
    env = workflow.config.environment(env_name)
    plan = planner.build(env_name=env_name, env=env, target="app", point="1")
    _, run = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    return workflow.approve(run.id, user=BOB).run


def wait_until(what: str, check: Any, *, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def state(store: Store, run_id: str) -> str:
    run = store.runs.get(run_id)
    assert run is not None
    return run.state


def test_a_stuck_run_in_one_environment_does_not_hold_another(
    store: Store, two_envs: RollbackConfig, tmp_path: Path, clock: Clock
) -> None:
    scripts = {
        "voxflow-prod": write_script(tmp_path / "prod.json", undo=["block"], _timeout=120),
        "voxflow-staging": write_script(tmp_path / "staging.json"),
    }
    planner = Planner(
        factory=lambda params: ScriptedTarget(
            scripts[getattr(params, "namespace", "voxflow-staging")]
        )
    )
    workflow = Workflow(store=store, config=two_envs)
    runner = Runner(
        store=store,
        workflow=workflow,
        config=two_envs,
        planner=planner,
        progress=Recorder(),
        workers=2,
    )
    stuck = approve(workflow, planner, "prod")
    assert runner.dispatch() == [stuck.id]
    wait_until(
        "prod is inside its stuck step", lambda: "undo" in script_log(scripts["voxflow-prod"])
    )
    with pytest.raises(TargetBusy):
        approve(workflow, planner, "prod")  # one run per target stays the rule
    # an approval request past its time-to-live is expired while prod is stuck
    env = two_envs.environment("staging")
    plan = planner.build(env_name="staging", env=env, target="db", point="1")
    _, waiting = workflow.request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    clock.advance(minutes=31)
    assert [r.id for r in runner.sweep()] == [waiting.id]
    second = approve(workflow, planner, "staging")
    assert runner.dispatch() == [second.id]
    wait_until("staging finished", lambda: state(store, second.id) == "succeeded")
    assert state(store, stuck.id) == "running"
    wait_until("staging's thread ended", lambda: runner.busy() == [stuck.id])
    (tmp_path / "prod.go").touch()
    wait_until("prod finished", lambda: state(store, stuck.id) == "succeeded")
    finished = sorted(
        (e.id, e.run_id)
        for run in (stuck, second)
        for e in store.events.of(run.incident_id)
        if e.kind == "run.succeeded"
    )
    assert [run_id for _, run_id in finished] == [second.id, stuck.id]


def test_the_pool_is_bounded(store: Store, two_envs: RollbackConfig, tmp_path: Path) -> None:
    scripts = {
        "voxflow-prod": write_script(tmp_path / "prod.json", undo=["block"], _timeout=120),
        "voxflow-staging": write_script(tmp_path / "staging.json"),
    }
    planner = Planner(
        factory=lambda params: ScriptedTarget(
            scripts[getattr(params, "namespace", "voxflow-staging")]
        )
    )
    workflow = Workflow(store=store, config=two_envs)
    runner = Runner(
        store=store,
        workflow=workflow,
        config=two_envs,
        planner=planner,
        progress=Recorder(),
        workers=1,
    )
    stuck = approve(workflow, planner, "prod")
    assert runner.dispatch() == [stuck.id]
    second = approve(workflow, planner, "staging")
    assert runner.dispatch() == []
    assert state(store, second.id) == "approved"
    (tmp_path / "prod.go").touch()
    wait_until("prod finished", lambda: state(store, stuck.id) == "succeeded")
    wait_until("the pool has room", lambda: runner.busy() == [])
    assert runner.dispatch() == [second.id]
    wait_until("staging finished", lambda: state(store, second.id) == "succeeded")


def test_a_stopping_runner_hands_its_runs_over_at_the_next_step_boundary(
    store: Store, two_envs: RollbackConfig, tmp_path: Path
) -> None:
    script = write_script(tmp_path / "prod.json", undo=["block"], _timeout=120)
    planner = Planner(factory=lambda params: ScriptedTarget(script))
    workflow = Workflow(store=store, config=two_envs)
    runner = Runner(
        store=store, workflow=workflow, config=two_envs, planner=planner, progress=Recorder()
    )
    run = approve(workflow, planner, "prod")
    assert runner.dispatch() == [run.id]
    wait_until("prod is inside undo", lambda: "undo" in script_log(script))
    runner.request_stop()
    assert runner.dispatch() == []
    (tmp_path / "prod.go").touch()  # the step in progress finishes; nothing after it starts
    assert runner.wait_idle(60)
    held = store.runs.get(run.id)
    assert held is not None and held.state == "running" and held.lease_owner is None
    assert [(s.name, s.state) for s in store.steps.of(run.id)] == [
        ("stop_workers", "succeeded"),
        ("undo", "succeeded"),
    ]
    assert "run.handed_over" in [e.kind for e in store.events.of(run.incident_id)]
    successor = Runner(
        store=store, workflow=workflow, config=two_envs, planner=planner, progress=Recorder()
    )
    assert successor.run_pending() == [run.id]
    assert script_log(script) == ["stop_workers", "undo", "status", "start_workers"]
    assert state(store, run.id) == "succeeded"
