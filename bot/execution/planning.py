"""The plan of a run, whatever its kind: a rollback's from the planner, a drill's from its own.

The approval (`bot.application.flows`) and the runner, before the first step and to
rebuild the stored steps on resume, ask here: the runner knows a drill only as a
kind of plan, and imports none of the use cases.
"""

from __future__ import annotations

from bot.config import Environment
from bot.domain.plans import Plan, RestoredStep, StoredStep
from bot.domain.verdict import Holders
from bot.execution.drill_forward import forwarded
from bot.execution.drill_plans import FORWARD, MARKER, build_drill, is_drill, restore_marker
from bot.execution.planner import Planner
from bot.persistence.models import Run


def plan_for_run(
    planner: Planner,
    run: Run,
    env: Environment,
    *,
    leave_maintenance_on_failure: bool = False,
    notify_customers: bool = True,
    holders: Holders | None = None,
) -> Plan:
    """The plan a run was requested with, from the live systems: a drill's, or a rollback's.

    `holders` names the other incidents holding the environment's targets (the verdict
    weighs them), seen the same way at approval and when the runner checks the plan. A
    drill tells no customer whatever `notify_customers` says (it has no communications).
    """
    if is_drill(run):
        return build_drill(
            planner,
            env_name=run.environment,
            env=env,
            target=run.target,
            point=run.point,
            leave_maintenance_on_failure=leave_maintenance_on_failure,
            holders=holders,
        )
    return planner.build(
        env_name=run.environment,
        env=env,
        target=run.target,
        point=run.point,
        force=run.force,
        leave_maintenance_on_failure=leave_maintenance_on_failure,
        notify_customers=notify_customers,
        holders=holders,
    )


def restore_for_run(
    planner: Planner, run: Run, env: Environment, stored: list[StoredStep]
) -> list[RestoredStep]:
    """Rebuild a run's approved steps; a drill's marker is rebuilt here, the rest as usual."""
    others = [s for s in stored if s.name != MARKER]
    rebuilt = {
        r.stored.position: r
        for r in planner.restore(
            env_name=run.environment,
            env=env,
            target=run.target,
            point=run.point,
            force=run.force,
            stored=others,
        )
    }
    for step in stored:
        if step.name == MARKER:
            rebuilt[step.position] = restore_marker(planner, env, step)
    return [forwarded(rebuilt[s.position], forward=s.phase == FORWARD) for s in stored]
