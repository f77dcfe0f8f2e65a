"""Which steps a rollback runs, in order, and the hash an approval is bound to.

The order is the procedures' emergency rollback, which every other procedure
is a part of: maintenance on, stop background work, back up the current
state, roll back, verify, poll health, maintenance off, restart background
work, then the post-rollback communications. Steps marked `always` (maintenance
off, restarting workers) run even after a failure, so a failed rollback does
not also leave the site in maintenance with its workers stopped, unless the
request asked to leave maintenance on for people to look.

A plan is rendered from `describe()` of its actions, and its hash covers
exactly those lines: if a newer revision appears or the backup point moves,
the description changes, the hash changes, and the approval no longer holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from actions.base import Action, Check, PlanningError, RollbackPoint, Target, TargetPlan
from actions.configfiles import ConfigFilesParams, ConfigFilesTarget
from actions.database import DatabaseParams, DatabaseTarget
from actions.docker import DockerParams, DockerTarget
from actions.http import (
    HealthCheck,
    NotifyWebhook,
    SendCustomerEmail,
    SetMaintenance,
    UpdateStatusPage,
)
from actions.kubernetes import KubernetesParams, KubernetesTarget, StartWorkers, StopWorkers
from actions.loadbalancer import BlueGreenParams, BlueGreenTarget
from bot.config import Environment, FullParams, TargetParams


@dataclass(frozen=True)
class PlannedStep:
    """An action placed in a plan."""

    position: int
    phase: str
    action: Action
    always: bool = False

    def as_json(self) -> dict[str, Any]:
        """Describe the step as stored with the run."""
        return {
            "position": self.position,
            "phase": self.phase,
            "name": self.action.name,
            "description": self.action.describe(),
            "always": self.always,
            "idempotent": self.action.idempotent,
            "timeout": self.action.timeout,
        }


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps for one rollback."""

    environment: str
    target: str
    point: str | None
    steps: tuple[PlannedStep, ...]
    notes: tuple[str, ...] = ()

    def as_json(self) -> list[dict[str, Any]]:
        """Return the stored form: one dict per step."""
        return [step.as_json() for step in self.steps]

    @property
    def hash(self) -> str:
        """Return the hash an approval is bound to."""
        return plan_hash(self.environment, self.target, self.as_json(), self.notes)


def plan_hash(
    environment: str, target: str, steps: list[dict[str, Any]], notes: tuple[str, ...] | list[str]
) -> str:
    """Hash what a person approves: environment, target, each step's line, the notes."""
    material = {
        "environment": environment,
        "target": target,
        "steps": [[s["phase"], s["name"], s["description"], s["always"]] for s in steps],
        "notes": list(notes),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


TargetFactory = Callable[[TargetParams], Target]
RateSource = Callable[[], float | None]


def target_factory(*, restore_rate: RateSource = lambda: None) -> TargetFactory:
    """Build Targets for config entries; databases learn the restore rate measured before."""

    def build(params: TargetParams) -> Target:
        match params:
            case KubernetesParams():
                return KubernetesTarget(params)
            case DockerParams():
                return DockerTarget(params)
            case BlueGreenParams():
                return BlueGreenTarget(params)
            case ConfigFilesParams():
                return ConfigFilesTarget(params)
            case DatabaseParams():
                return DatabaseTarget(params, restore_rate=restore_rate())
        raise PlanningError(f"a {params.kind} target has no single rollback of its own")

    return build


def default_point(points: list[RollbackPoint]) -> RollbackPoint | None:
    """Return the point just before the current one (the procedures' "previous version").

    A point marked `avoid` (what a rollback moved away from, the bot's own pre-rollback
    backup) is never the default: it stays on offer for an explicit choice.
    """
    seen_current = False
    for point in points:
        if point.is_current:
            seen_current = True
        elif seen_current and not point.avoid:
            return point
    return next((p for p in points if not p.is_current and not p.avoid), None)


@dataclass
class Planner:
    """Builds plans, lists rollback points and runs pre-rollback checks for config targets."""

    factory: TargetFactory = field(default_factory=target_factory)
    _cache: dict[int, Target] = field(default_factory=dict)

    def target(self, params: TargetParams) -> Target:
        """Return the Target for `params`, built once."""
        key = id(params)
        if key not in self._cache:
            self._cache[key] = self.factory(params)
        return self._cache[key]

    def points(self, env: Environment, name: str) -> list[RollbackPoint]:
        """List a target's rollback points (a `full` target has one: everyone's previous)."""
        params = env.targets[name]
        if isinstance(params, FullParams):
            return [
                RollbackPoint(
                    ref="previous", label="previous state of " + ", ".join(params.targets)
                )
            ]
        return self.target(params).points()

    def checks(self, env: Environment, name: str, point: str | None) -> list[Check]:
        """Run the machine-verifiable pre-rollback checks."""
        params = env.targets[name]
        if isinstance(params, FullParams):
            return [c for member in params.targets for c in self.checks(env, member, None)]
        return self.target(params).checks(point)

    def build(
        self,
        *,
        env_name: str,
        env: Environment,
        target: str,
        point: str | None,
        force: bool = False,
        leave_maintenance_on_failure: bool = False,
    ) -> Plan:
        """Resolve a rollback into concrete steps in the procedures' order."""
        parts: list[TargetPlan] = []
        for member in env.members(target):
            member_point = point if member == target else None
            parts.append(self.target(env.targets[member]).plan(member_point, force=force))
        parts = [*self._database_workers(env, env.members(target)), *parts]
        phased: list[tuple[str, Action, bool]] = []
        if env.maintenance is not None:
            phased.append(("maintenance", SetMaintenance(env.maintenance, enabled=True), False))
        for phase in ("prepare", "rollback", "verify"):
            phased += [(phase, a, False) for part in parts for a in getattr(part, phase)]
        if env.health_url:
            phased.append(("health", HealthCheck(env.health_url), False))
        if env.maintenance is not None:
            off = SetMaintenance(env.maintenance, enabled=False)
            phased.append(("maintenance", off, not leave_maintenance_on_failure))
        phased += [("resume", a, True) for part in reversed(parts) for a in part.resume]
        phased += [("communicate", a, False) for a in _communications(env, env_name, target)]
        steps = tuple(
            PlannedStep(position=i, phase=phase, action=action, always=always)
            for i, (phase, action, always) in enumerate(phased)
        )
        notes = tuple(note for part in parts for note in part.notes)
        return Plan(environment=env_name, target=target, point=point, steps=steps, notes=notes)

    def _database_workers(self, env: Environment, members: list[str]) -> list[TargetPlan]:
        """A database rollback without a Kubernetes member stops the environment's workers
        first and starts them last (the procedures' pre-rollback checklist)."""
        kinds = [env.targets[m] for m in members]
        if not any(isinstance(p, DatabaseParams) for p in kinds) or any(
            isinstance(p, KubernetesParams) for p in kinds
        ):
            return []
        kube = [p for p in env.targets.values() if isinstance(p, KubernetesParams) and p.workers]
        return [
            TargetPlan(
                prepare=[StopWorkers(apps=apps, namespace=p.namespace, workers=tuple(p.workers))],
                resume=[StartWorkers(apps=apps, namespace=p.namespace, workers=tuple(p.workers))],
            )
            for p in kube
            for apps in [cast(KubernetesTarget, self.target(p)).apps]
        ]


def _communications(env: Environment, env_name: str, target: str) -> list[Action]:
    comms = env.communications
    actions: list[Action] = []
    message = (
        "System has been rolled back and is now operational. We are investigating the root cause."
    )
    if comms.status_page is not None:
        actions.append(UpdateStatusPage(comms.status_page, status="operational", message=message))
    if comms.internal_webhook is not None:
        actions.append(
            NotifyWebhook(
                comms.internal_webhook,
                text=f"Post-Rollback Status Update: {target} in {env_name}",
                fields={
                    "Status": "System Operational",
                    "Next Steps": "Root cause analysis in progress",
                },
            )
        )
    if comms.customer_email is not None:
        actions.append(
            SendCustomerEmail(
                comms.customer_email,
                subject="Service Restored",
                body=(
                    "We have resolved the service issues and the service is now fully "
                    "operational. We apologize for any inconvenience caused."
                ),
            )
        )
    return actions
