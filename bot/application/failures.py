"""After a failure (`bot.domain.aftermath`): the decisions a failed run leaves to people.

`retry_failed` approves the failed run again, by an approver other than the requester, to
re-run its stored plan from the failed step, and refuses when the plan went stale;
`leave_maintenance_on` and `turn_maintenance_off` are the two decisions on maintenance a
failure can leave; `resolve` records that a person handled the failure. `rearm` gives
automatic rollback back to a target after monitoring used it once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from actions.base import ActionError, StepContext, running_point
from bot.config import RollbackConfig
from bot.domain.aftermath import (
    LEFT_ON,
    OFF,
    RESOLVED,
    TURNED_OFF,
    Aftermath,
    aftermath,
    retry_positions,
    steps_of,
)
from bot.domain.versions import version_key
from bot.execution.planner import Planner, environment_step
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store, TargetBusy

MONITORING = "monitoring"
"""The requester of the runs monitoring opens."""
DECIDED = "run.decided"
"""Outbox message: a decision on a run was made; redraw its messages."""

REARMED = "auto.rearmed"
"""A person re-armed automatic rollback after monitoring used it (on that run's incident)."""


def disarmed_by(store: Store, *, environment: str, target: str) -> Run | None:
    """The automatic rollback that disarmed automatic rollback of `target`, or None (armed).

    After monitoring rolls a target back by itself, it does not do so again until a person
    re-arms it: a flapping alert or a rollback that did not help must never loop (an
    automatic policy disables itself after firing). Re-arming is an event on that run's
    incident, so the rule holds across replicas and restarts.
    """
    for run in store.runs.find(environment=environment, target=target, limit=50):
        if run.requester != MONITORING or run.approved_at is None:
            continue
        if any(e.kind == REARMED and e.run_id == run.id for e in store.events.of(run.incident_id)):
            return None
        return run
    return None


def run_or_refuse(store: Store, run_id: str) -> Run:
    """The run, or Refused saying it is gone."""
    run = store.runs.get(run_id)
    if run is None:
        raise Refused("this rollback no longer exists")
    return run


@dataclass
class Failures:
    """The use cases of a failed run and of a disarmed target."""

    store: Store
    workflow: Workflow
    config: RollbackConfig
    planner: Planner
    wake_runner: threading.Event
    tell: Callable[[str, str], None]
    """Queue a redraw of the run's messages for the outbox (`Flows._tell`)."""

    def retry_failed(
        self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()
    ) -> Run:
        """Re-run a failed run's stored plan from its failed step (`bot.domain.aftermath`).

        Refused when the plan went stale: the target is gone from the config, a stored
        step can no longer be rebuilt, or the target now runs a version the plan neither
        rolls back from nor to (somebody changed it since). Re-plan is the way on then.
        """
        run = run_or_refuse(self.store, run_id)
        if run.state != "failed":
            raise Refused(f"this rollback is {run.state}; only a failed one can be retried")
        records = self.store.steps.of(run.id)
        after = aftermath(run.plan, records, self.store.events.of(run.incident_id), run.id)
        if after.failed is None:
            raise Refused("no step of this rollback failed; Re-plan to roll back again")
        self._check_fresh(run, after.failed.position)
        positions = retry_positions(run.plan, records, maintenance_on=after.maintenance_on)
        try:
            fresh = self.workflow.retry(
                run_id,
                user=user,
                user_groups=user_groups,
                positions=positions,
                detail={"from_step": after.failed.position, "steps": positions},
            )
        except TargetBusy as exc:
            raise Refused(str(exc)) from None
        self.tell(run_id, DECIDED)  # redraws the announcement, the card, plan and progress
        self.wake_runner.set()
        return fresh

    def _check_fresh(self, run: Run, failed_at: int) -> None:
        """Refuse a retry whose stored plan no longer fits the target or the config."""
        env = self.config.environments.get(run.environment)
        if env is None or run.target not in env.targets:
            raise Refused(
                f"{run.target} in {run.environment} is no longer in the config file; Re-plan"
            )
        keys = {key for key in (run.from_key, run.to_key) if key}
        if keys:
            try:
                points = self.planner.points(env, run.target)
            except (ActionError, OSError) as exc:
                raise Refused(f"the target's versions cannot be read, so no retry: {exc}") from None
            current = running_point(points)
            if current is not None and version_key(current.key) not in keys:
                raise Refused(
                    f"{run.target} now runs {current.label}, which this plan neither rolls "
                    "back from nor to: it changed since the failure, so the stored plan is "
                    "stale. Re-plan instead"
                )
        restored = self.planner.restore(
            env_name=run.environment,
            env=env,
            target=run.target,
            point=run.point,
            force=run.force,
            stored=[s for s in steps_of(run.plan) if s.position >= failed_at],
        )
        problem = next((r.problem for r in restored if r.action is None), None)
        if problem:
            raise Refused(f"the stored plan can no longer be rebuilt ({problem}); Re-plan instead")

    def leave_maintenance_on(
        self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()
    ) -> None:
        """Record that maintenance stays on after a failure, and who decided it."""
        run = self._maintenance_run(run_id, user=user, user_groups=user_groups)
        self.store.events.add(
            incident_id=run.incident_id, run_id=run.id, kind=LEFT_ON, actor=user, detail={}
        )
        self.tell(run.id, DECIDED)

    def turn_maintenance_off(
        self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()
    ) -> str:
        """Send the plan's own maintenance-off request now; return what it answered."""
        run = self._maintenance_run(run_id, user=user, user_groups=user_groups)
        env = self.config.environment(run.environment)
        stored = next((s for s in steps_of(run.plan) if s.name == OFF), None)
        spec = stored.spec if stored is not None else {}
        try:
            action = environment_step(env, run.environment, run.target, OFF, spec)
            ctx = StepContext(
                incident_id=run.incident_id,
                run_id=run.id,
                deadline=time.monotonic() + action.timeout,
            )
            result = action.run(ctx)
        except ActionError as exc:
            self.store.events.add(
                incident_id=run.incident_id,
                run_id=run.id,
                kind="maintenance.off_failed",
                actor=user,
                detail={"error": str(exc)},
            )
            raise Refused(f"maintenance could not be turned off: {exc}") from None
        self.store.events.add(
            incident_id=run.incident_id,
            run_id=run.id,
            kind=TURNED_OFF,
            actor=user,
            detail={"summary": result.summary},
        )
        self.tell(run.id, DECIDED)
        return result.summary

    def resolve(self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()) -> None:
        """Record that a person has handled a failed run: who and when, on the record.

        Until then the failure stays in status, App Home and the thread; afterwards its
        incident counts as recovered at this moment (bot.domain.recovery).
        """
        run, after = self._failed(
            run_id,
            user=user,
            user_groups=user_groups,
            who="only the requester or an approver marks a failed rollback resolved",
            why="only a failed one is marked resolved",
        )
        if after.resolved_by is not None:
            raise Refused(f"{after.resolved_by} already marked it resolved")
        self.store.events.add(
            incident_id=run.incident_id, run_id=run.id, kind=RESOLVED, actor=user, detail={}
        )
        self.tell(run.id, DECIDED)

    def rearm(self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()) -> None:
        """Re-arm automatic rollback of the target an automatic rollback (`run_id`) disarmed."""
        run = run_or_refuse(self.store, run_id)
        env = self.config.environment(run.environment)
        if not self.workflow.is_approver(env, user, user_groups):
            raise Refused("only an approver of the environment re-arms automatic rollback")
        disarmed = disarmed_by(self.store, environment=run.environment, target=run.target)
        if disarmed is None or disarmed.id != run.id:
            raise Refused(f"automatic rollback of {run.target} is not disarmed by this run")
        self.store.events.add(
            incident_id=run.incident_id, run_id=run.id, kind=REARMED, actor=user, detail={}
        )

    def _maintenance_run(self, run_id: str, *, user: str, user_groups: frozenset[str]) -> Run:
        run, after = self._failed(
            run_id,
            user=user,
            user_groups=user_groups,
            who="only the requester or an approver decides on maintenance mode",
            why="maintenance is the plan's to handle",
        )
        if not after.maintenance_on:
            raise Refused("maintenance mode is not on after this rollback; nothing to decide")
        return run

    def _failed(
        self, run_id: str, *, user: str, user_groups: frozenset[str], who: str, why: str
    ) -> tuple[Run, Aftermath]:
        """The failed run and what it left, for its requester or an approver; else Refused
        with `who` (someone else) or `why` (a run that is not failed)."""
        run = run_or_refuse(self.store, run_id)
        env = self.config.environment(run.environment)
        if user != run.requester and not self.workflow.is_approver(env, user, user_groups):
            raise Refused(who)
        if run.state != "failed":
            raise Refused(f"this rollback is {run.state}; {why}")
        after = aftermath(
            run.plan, self.store.steps.of(run.id), self.store.events.of(run.incident_id), run.id
        )
        return run, after
