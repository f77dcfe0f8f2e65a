"""A drill's roll-forward for Docker, configuration and load-balancer targets.

Kubernetes rolls forward with its own undo, planned from the revision the rollback will
create (`drill_plans`). The other kinds are planned from the rollback's own steps, the
move reversed, each rebuilt through the target's `restore` like a resumed step:

- `docker.swap_container`: the same swap with the images exchanged (the container runs
  the rolled-back image by then);
- `loadbalancer.switch_traffic`: `loadbalancer.restore_traffic` to the routes the switch
  found and recorded when it was planned (a weighted canary comes back weighted);
- `configfiles.restore`: `configfiles.restore_pre_rollback`, the archive the rollback's
  own pre-rollback backup took of the live directory this run; then the target's restart
  and health poll again.

A forward step runs with memory of its own (`ForwardMemory`): the rollback and the
roll-forward of one target are the same kind of step on the same container, directory or
routes, and each step keeps its progress in memory under a key of that thing. Sharing
memory, the roll-forward would find the rollback's record ("done") and skip. Only the
keys a forward step must read from the rollback (`SHARED`: the pre-rollback backup's
name) are read through, and the GitOps suspension records (`SHARED_PREFIXES`) are read and
written through: the roll-forward's resume releases what the rollback's suspend recorded,
so the run no longer counts that owner as held (no hold, no Resume sync offered after it).

A Kubernetes target whose workload Argo CD or Flux deploys, with a `git:` source, drills
the whole GitOps loop (`gitops_parts`, the steps in `actions.kubernetes.drill`): its
proposal is made on the drill's own branch (a real review into the base with
`change: pull-request`, never merged; a commit on that branch, never on the base, with
`change: commit`: `actions.git.drill` says why) and checked with the hold; the
roll-forward withdraws it first, rolls the workload forward, resumes each held owner
exactly as recorded (parents first) and confirms one reconcile leaves the workload as it
was. Withdrawal and resumption are `always` steps, so a failed drill leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from actions.base import Action, PlanningError, Restorable, StepContext, StepResult, label_of
from actions.base import spec_of as spec_of_action
from actions.configfiles import PRE_BACKUP_KEY
from actions.kubernetes.owners import GITOPS_MEMORY
from bot.domain.plans import PlannedStep, RestoredStep, with_timeout

PREFIX = "drill.forward:"
SHARED = (PRE_BACKUP_KEY,)
"""Memory keys a roll-forward step reads from the rollback's steps."""
SHARED_PREFIXES = (GITOPS_MEMORY,)
"""Memory keys a roll-forward step reads and writes as the rollback's (what sync was)."""


class ForwardMemory(MutableMapping[str, Any]):
    """The run's memory seen by a roll-forward step: its own keys, prefixed; `SHARED` keys
    read through to the rollback's."""

    def __init__(self, inner: MutableMapping[str, Any]) -> None:
        self.inner = inner

    def __getitem__(self, key: str) -> Any:
        if key.startswith(SHARED_PREFIXES):
            return self.inner[key]
        if PREFIX + key in self.inner:
            return self.inner[PREFIX + key]
        if key in SHARED:
            return self.inner[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.inner[key if key.startswith(SHARED_PREFIXES) else PREFIX + key] = value

    def __delitem__(self, key: str) -> None:
        del self.inner[key if key.startswith(SHARED_PREFIXES) else PREFIX + key]

    def __iter__(self) -> Iterator[str]:
        return (k.removeprefix(PREFIX) for k in list(self.inner) if k.startswith(PREFIX))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class Forwarded:
    """A roll-forward step: the action itself, run with the forward's own memory."""

    action: Action
    timeout: float = 0.0
    name: str = field(init=False)
    idempotent: bool = field(init=False)

    def __post_init__(self) -> None:
        self.timeout = self.timeout or self.action.timeout
        self.name, self.idempotent = self.action.name, self.action.idempotent

    def describe(self) -> str:
        """The action's own words."""
        return self.action.describe()

    def label(self) -> str:
        """The action's own label."""
        return label_of(self.action)

    def spec(self) -> dict[str, Any]:
        """The action's own spec: a resumed forward step is rebuilt, then wrapped again."""
        return spec_of_action(self.action)

    def run(self, ctx: StepContext) -> StepResult:
        """Run the action on the forward's memory."""
        inner = with_timeout(self.action, self.timeout)
        return inner.run(replace(ctx, memory=ForwardMemory(ctx.memory)))


def forwarded(step: RestoredStep, *, forward: bool) -> RestoredStep:
    """A rebuilt step of a stored drill, wrapped again when it is a roll-forward step."""
    if not forward or step.action is None or isinstance(step.action, Forwarded):
        return step
    return RestoredStep(step.stored, Forwarded(step.action), step.problem)


Reverse = Callable[[Restorable, dict[str, Any]], list[Action]]


def _docker(member: Restorable, spec: dict[str, Any]) -> list[Action]:
    swapped = {
        **spec,
        "from_image": spec["to_image"],
        "from_image_id": spec["to_image_id"],
        "to_image": spec["from_image"],
        "to_image_id": spec["from_image_id"],
    }
    return [member.restore("docker.swap_container", swapped)]


def _traffic(member: Restorable, spec: dict[str, Any]) -> list[Action]:
    return [member.restore("loadbalancer.restore_traffic", {"routes": spec["planned"]})]


def _config(member: Restorable, spec: dict[str, Any]) -> list[Action]:
    return [member.restore("configfiles.restore_pre_rollback", {})]


REVERSE: dict[str, Reverse] = {
    "docker.swap_container": _docker,
    "loadbalancer.switch_traffic": _traffic,
    "configfiles.restore": _config,
}
"""How each kind's rollback step is undone, from its planned spec."""


def reversed_steps(
    member: Restorable, target: str, rollback: tuple[PlannedStep, ...]
) -> list[Action]:
    """The roll-forward of `target`: its rollback steps reversed, then its verification."""
    own = [s for s in rollback if s.source == target]
    moves = [s for s in own if s.phase == "rollback"]
    if not moves:
        raise PlanningError(f"{target}'s rollback changes nothing that could be rolled forward")
    actions: list[Action] = []
    for step in moves:
        reverse = REVERSE.get(step.action.name)
        if reverse is None:
            raise PlanningError(f"{target}'s {step.action.name} step has no roll-forward")
        actions += reverse(member, spec_of_action(step.action))
    actions += [
        member.restore(s.action.name, spec_of_action(s.action)) for s in own if s.phase == "verify"
    ]
    return actions


SUSPEND = "kubernetes.suspend_sync"
PROPOSE = "git.propose"
RESUME = "kubernetes.resume_sync"
UNDOS = ("kubernetes.rollout_undo", "kubernetes.workload_undo")
APPLICATIONSET = "argocd-applicationset"


@dataclass(frozen=True)
class GitOpsParts:
    """The GitOps parts of a Kubernetes target's drill."""

    proposal: list[Action]
    """In place of the rollback's proposal: the drill's, then the check of it and the hold."""
    before: list[Action]
    """First in the roll-forward (always): the proposal withdrawn."""
    resume: list[Action]
    """After the roll-forward (always): each held owner resumed, parents first."""
    confirm: list[Action]
    """Last: one reconcile by the owner that deploys the workload, confirmed."""


def _step(action: Action) -> dict[str, Any]:
    return {"name": action.name, "spec": spec_of_action(action)}


def gitops_parts(
    member: Restorable, target: str, rollback: tuple[PlannedStep, ...], forward: list[Action]
) -> GitOpsParts:
    """Plan the drill's GitOps parts from the rollback's suspend and propose steps and the
    roll-forward's undo (none: nothing is held and nothing proposed)."""
    own = [s.action for s in rollback if s.source == target]
    held = [spec_of_action(a) for a in own if a.name == SUSPEND]
    back = next((a for a in own if a.name in UNDOS), None)
    ahead = next((a for a in forward if a.name in UNDOS), None)
    propose = next((spec_of_action(a) for a in own if a.name == PROPOSE), None)
    proposal: list[Action] = []
    before: list[Action] = []
    confirm: list[Action] = []
    if propose is not None and back is not None:
        source, workload = propose["source"], propose["workload"]
        proposal = [
            member.restore(PROPOSE, {**propose, "drill": True}),
            member.restore(
                "kubernetes.drill_hold",
                {
                    "source": source,
                    "workload": workload,
                    "images": propose["good_images"],
                    "held": held,
                    "undo": _step(back),
                },
            ),
        ]
        before = [member.restore("git.withdraw", {"source": source, "workload": workload})]
        deploying = [spec for spec in held if spec["tool"] != APPLICATIONSET][-1:]
        if deploying and ahead is not None:
            confirm = [
                member.restore(
                    "kubernetes.confirm_reconcile",
                    {"source": source, "owner": deploying[0], "undo": _step(ahead)},
                )
            ]
    resume = [member.restore(RESUME, {"suspend": spec}) for spec in held]
    return GitOpsParts(proposal, before, resume, confirm)
