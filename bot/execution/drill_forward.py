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
name) are read through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from actions.base import Action, PlanningError, Restorable, StepContext, StepResult, label_of
from actions.base import spec_of as spec_of_action
from actions.configfiles import PRE_BACKUP_KEY
from bot.domain.plans import PlannedStep, RestoredStep, with_timeout

PREFIX = "drill.forward:"
SHARED = (PRE_BACKUP_KEY,)
"""Memory keys a roll-forward step reads from the rollback's steps."""


class ForwardMemory(MutableMapping[str, Any]):
    """The run's memory seen by a roll-forward step: its own keys, prefixed; `SHARED` keys
    read through to the rollback's."""

    def __init__(self, inner: MutableMapping[str, Any]) -> None:
        self.inner = inner

    def __getitem__(self, key: str) -> Any:
        if PREFIX + key in self.inner:
            return self.inner[PREFIX + key]
        if key in SHARED:
            return self.inner[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.inner[PREFIX + key] = value

    def __delitem__(self, key: str) -> None:
        del self.inner[PREFIX + key]

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
