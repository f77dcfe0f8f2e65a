"""A drill's plan: the deploy marker, the target's rollback, the roll-forward, verified.

It is one plan, approved once, so a crash in the middle resumes it like any run:
every step is stored with its source and spec. The roll-forward is planned against
the state the rollback will leave, which the Kubernetes controller makes
predictable: the restored ReplicaSet takes the next revision number (MaxRevision + 1,
kubernetes pkg/controller/deployment/sync.go getNewReplicaSet), so the forward undo
is the target's own undo to the original revision, *from* that next number. The
run is a drill when its `kind` says so (set when it is requested).

A Kubernetes target whose workload Argo CD or Flux deploys drills the GitOps loop too: its
proposal goes to the drill's own branch and is checked with the hold, and the roll-forward
withdraws it, resumes the sync as recorded and confirms one reconcile
(`drill_forward.gitops_parts`).

A database cannot be rolled forward after a restore, and needs not be: its drill is a
restore drill (`actions.database.drills`), the newest backup (and the archive's end, where
WAL is archived) restored into scratch databases, verified there and dropped by `always`
steps. It writes nothing live, so it is allowed in every environment, production too
(`drill_allowed`). Its point records the dump and time it chose, so the runner plans the
same drill again (the archive's end moves with every commit).

`bot.execution.planning` plans and restores every run, a drill's through here; the
use cases around drills (opening one, measuring it, who is due) are
`bot.application.drills`'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import actions.database as database_steps
from actions.base import (
    Action,
    PermanentError,
    PlanningError,
    Restorable,
    RollbackPoint,
    StepContext,
    StepResult,
    Target,
    running_point,
    spec_of,
)
from actions.configfiles import ConfigFilesParams
from actions.database import DatabaseParams
from actions.kubernetes import KubernetesParams
from bot.config import Environment, FullParams
from bot.domain.plans import Plan, PlannedStep, RestoredStep, StoredStep, default_point
from bot.domain.records import RunRecord
from bot.domain.states import RunKind
from bot.domain.verdict import Holders
from bot.execution.drill_forward import (
    PROPOSE,
    Forwarded,
    GitOpsParts,
    gitops_parts,
    reversed_steps,
)
from bot.execution.planner import Planner, configured

MARKER = "drill.marker"
"""The marker step's name, and its step memory key: the version it found running."""
FORWARD = "forward"
"""The phase of the roll-forward steps."""
PITR = "pitr"
"""The phase of a database drill's point-in-time recovery and its verification."""
CLEANUP = "cleanup"
"""The phase of a database drill's scratch drops (always run)."""
SKIPPED_PHASES = ("communicate",)


@dataclass(kw_only=True)
class DrillMarker:
    """Record what runs now; refuse when it is no longer what the drill was planned from."""

    target: Target = field(repr=False, compare=False)
    target_name: str
    ref: str
    back_to: str
    timeout: float = 60.0
    name: str = field(default=MARKER, init=False)
    idempotent: bool = field(default=True, init=False)

    def describe(self) -> str:
        """Name the version kept and the two moves of the drill."""
        return (
            f"Drill marker: record that {self.target_name} runs {self.ref} now; the drill rolls "
            f"back to {self.back_to}, then forward to {self.ref} again"
        )

    def label(self) -> str:
        """Words for people."""
        return f"Drill marker: record what {self.target_name} runs now ({self.ref})"

    def spec(self) -> dict[str, Any]:
        """The target and both points."""
        return {"target": self.target_name, "ref": self.ref, "back_to": self.back_to}

    def run(self, ctx: StepContext) -> StepResult:
        """Keep the running version in memory; a resumed marker that already kept it skips."""
        if MARKER in ctx.memory:
            return StepResult(
                summary=f"marker already recorded: {ctx.memory[MARKER]}", skipped=True
            )
        current = running_point(self.target.points())
        if current is None or current.ref != self.ref:
            now = current.label if current is not None else "no known version"
            raise PermanentError(
                f"{self.target_name} runs {now}, not {self.ref} as planned; plan the drill again"
            )
        ctx.memory[MARKER] = current.label
        ctx.emit(f"{self.target_name} runs {current.label}")
        return StepResult(
            summary=f"{self.target_name} runs {current.label}",
            data={"ref": current.ref, "label": current.label},
        )


def drill_allowed(env: Environment, env_name: str, target: str) -> bool:
    """A database's restore drill writes nothing live: allowed anywhere; the rest where the
    environment allows drills (`drills_allowed`, not production by default)."""
    return is_restore_drill(env, target) or env.allows_drills(env_name)


def is_restore_drill(env: Environment, target: str) -> bool:
    """Whether `target`'s drill is a restore drill (a database's)."""
    return isinstance(env.targets[target], DatabaseParams)


def _full_drill(
    planner: Planner,
    *,
    env_name: str,
    env: Environment,
    target: str,
    point: str | None,
    leave_maintenance_on_failure: bool,
    holders: Holders | None,
) -> Plan:
    """The full-system drill: each member's drill, rollbacks in the target's order (a
    database's restore drill among them), then the roll-forwards in reverse order.

    The point maps each member to its own drill's point (JSON), so a database member's
    restore drill is planned again with the dump and time it chose.
    """
    chosen = json.loads(point) if point else {}
    parts = [
        build_drill(
            planner,
            env_name=env_name,
            env=env,
            target=member,
            point=chosen.get(member),
            leave_maintenance_on_failure=leave_maintenance_on_failure,
            holders=holders,
        )
        for member in env.members(target)
    ]
    back = [s for part in parts for s in part.steps if s.phase != FORWARD]
    ahead = [s for part in reversed(parts) for s in part.steps if s.phase == FORWARD]
    steps = tuple(replace(s, position=i) for i, s in enumerate([*back, *ahead]))
    return Plan(
        environment=env_name,
        target=target,
        point=json.dumps({p.target: p.point for p in parts}, sort_keys=True),
        steps=steps,
        notes=tuple(note for part in parts for note in part.notes),
        verdicts=tuple(v for part in parts for v in part.verdicts),
    )


def _restore_drill(
    planner: Planner, *, env_name: str, env: Environment, target: str, point: str | None
) -> Plan:
    """The newest backup (and the archive's end) restored into scratch, verified, dropped."""
    member = planner.target(env.targets[target])
    if not isinstance(member, database_steps.DatabaseTarget):
        raise PlanningError(f"{target} is not a database that can be drilled here")
    drill = database_steps.drill_plan(member, point)
    phased: list[tuple[str, Action, bool]] = []
    if drill.dump:
        restore, verify = drill.dump
        phased += [("rollback", restore, False), ("verify", verify, False)]
        phased.append((CLEANUP, drill.cleanup[0], True))
    if drill.pitr:
        phased += [(PITR, action, False) for action in drill.pitr]
        phased.append((CLEANUP, drill.cleanup[-1], True))
    steps = tuple(
        PlannedStep(
            position=i,
            phase=phase,
            action=configured(env, target, target, action),
            always=always,
            source=target,
        )
        for i, (phase, action, always) in enumerate(phased)
    )
    notes = (
        *drill.notes,
        f"Restore drill: {drill.restored} of {target} restored into scratch, measured and "
        "dropped; nothing live is touched, nothing is announced.",
    )
    return Plan(environment=env_name, target=target, point=drill.point, steps=steps, notes=notes)


def drill_points(
    planner: Planner, env: Environment, target: str
) -> tuple[RollbackPoint | None, RollbackPoint, list[RollbackPoint]]:
    """Return what runs now, the point the drill rolls back to, and all the target's points.

    A configuration target lists no point for its live directory (it is not a backup):
    its roll-forward restores the backup the rollback takes of it, so it needs none.
    """
    points = planner.points(env, target)
    current = running_point(points)
    back = default_point(points)
    if current is None and not isinstance(env.targets[target], ConfigFilesParams):
        raise PlanningError(f"{target} lists no current version to roll forward to")
    if back is None:
        raise PlanningError(f"{target} has no earlier version to roll back to")
    return current, back, points


def _next_number(points: list[RollbackPoint]) -> int | None:
    """The number the restored version will be listed under (MaxRevision + 1)."""
    numbers = [int(p.ref) for p in points if p.ref.isdigit()]
    return max(numbers) + 1 if numbers else None


def _forward(
    planner: Planner,
    env: Environment,
    *,
    target: str,
    current: RollbackPoint | None,
    after: int | None,
    rollback: tuple[PlannedStep, ...],
) -> list[Action]:
    """Kubernetes: the target's own undo to the running version, as it will be once rolled
    back; the other kinds: the rollback's moves reversed (`drill_forward`)."""
    member = planner.target(env.targets[target])
    if not isinstance(member, Restorable):
        raise PlanningError(f"{target} cannot rebuild its steps, so it cannot be rolled forward")
    if not isinstance(env.targets[target], KubernetesParams):
        return reversed_steps(member, target, rollback)
    assert current is not None  # drill_points refuses a Kubernetes target without one
    part = member.plan(current.ref, force=True)
    actions = []
    # The Git change is the rollback's to propose (and the drill's to withdraw), not the
    # roll-forward's: Git already names the version rolled forward to.
    for action in [a for a in [*part.rollback, *part.verify] if a.name != PROPOSE]:
        spec = spec_of(action)
        if "from_revision" in spec and after is not None:
            action = member.restore(action.name, {**spec, "from_revision": after})
        actions.append(action)
    return actions


def _gitops(
    planner: Planner,
    env: Environment,
    target: str,
    rollback: tuple[PlannedStep, ...],
    forward: list[Action],
) -> GitOpsParts:
    """A Kubernetes target's GitOps parts (`drill_forward.gitops_parts`); others have none."""
    member = planner.target(env.targets[target])
    if not isinstance(env.targets[target], KubernetesParams) or not isinstance(member, Restorable):
        return GitOpsParts([], [], [], [])
    return gitops_parts(member, target, rollback, forward)


def build_drill(
    planner: Planner,
    *,
    env_name: str,
    env: Environment,
    target: str,
    point: str | None = None,
    leave_maintenance_on_failure: bool = False,
    holders: Holders | None = None,
) -> Plan:
    """Plan a drill: marker, the rollback to the default point, the roll-forward, verified;
    a database's, its restore drill (`point`: the one it was planned with before)."""
    if is_restore_drill(env, target):
        return _restore_drill(planner, env_name=env_name, env=env, target=target, point=point)
    if isinstance(env.targets[target], FullParams):
        return _full_drill(
            planner,
            env_name=env_name,
            env=env,
            target=target,
            point=point,
            leave_maintenance_on_failure=leave_maintenance_on_failure,
            holders=holders,
        )
    current, back, points = drill_points(planner, env, target)
    rollback = planner.build(
        env_name=env_name,
        env=env,
        target=target,
        point=back.ref,
        leave_maintenance_on_failure=leave_maintenance_on_failure,
        holders=holders,
    )
    phased: list[tuple[str, Action, bool, str | None]] = []
    if current is not None:
        marker = DrillMarker(
            target=planner.target(env.targets[target]),
            target_name=target,
            ref=current.ref,
            back_to=back.ref,
        )
        phased.append(("drill", marker, False, target))
    forward = _forward(
        planner,
        env,
        target=target,
        current=current,
        after=_next_number(points),
        rollback=rollback.steps,
    )
    parts = _gitops(planner, env, target, rollback.steps, forward)
    for s in rollback.steps:
        if s.phase in SKIPPED_PHASES:
            continue
        if s.action.name == PROPOSE and s.source == target and parts.proposal:
            phased += [(s.phase, action, False, s.source) for action in parts.proposal]
        else:
            phased.append((s.phase, s.action, s.always, s.source))
    phased += [(FORWARD, Forwarded(action), True, target) for action in parts.before]
    phased += [(FORWARD, Forwarded(action), False, target) for action in forward]
    phased += [(FORWARD, Forwarded(action), True, target) for action in parts.resume]
    phased += [(FORWARD, Forwarded(action), False, target) for action in parts.confirm]
    health = [s for s in rollback.steps if s.phase == "health"]
    phased += [(FORWARD, Forwarded(s.action), False, None) for s in health]
    ahead = current.ref if current is not None else "the configuration live before"
    steps = tuple(
        PlannedStep(
            position=i,
            phase=phase,
            action=action,
            always=always,
            source=source,
            words=_forward_words(action, target, ahead) if phase == FORWARD else "",
        )
        for i, (phase, action, always, source) in enumerate(phased)
    )
    notes = (
        *rollback.notes,
        f"Drill: {target} goes back to {back.ref} and forward to {ahead} again; "
        "nothing is announced on the status page or to customers.",
    )
    # replace(), not Plan(...): whatever else the rollback's plan carries (its reversibility
    # verdict) stays with the drill's plan.
    return replace(rollback, point=back.ref, steps=steps, notes=notes)


FORWARD_MOVES = ("_undo", ".swap_container", ".restore_traffic", ".restore_pre_rollback")
"""The roll-forward steps that move the target (the rest verify it)."""


def _forward_words(action: Action, target: str, ref: str) -> str:
    """A roll-forward step in people's words: it uses the target's undo, but goes forward."""
    if action.name.endswith(FORWARD_MOVES):
        return f"Roll {target} forward to {ref}"
    return ""


def is_drill(run: RunRecord) -> bool:
    """Whether the run is a drill's."""
    return run.kind == RunKind.DRILL


def restore_marker(planner: Planner, env: Environment, step: StoredStep) -> RestoredStep:
    name = str(step.spec.get("target", ""))
    if name not in env.targets:
        return RestoredStep(step, None, f"{step.label} could not be rebuilt: no target {name!r}")
    marker = DrillMarker(
        target=planner.target(env.targets[name]),
        target_name=name,
        ref=str(step.spec["ref"]),
        back_to=str(step.spec["back_to"]),
    )
    return RestoredStep(step, marker)
