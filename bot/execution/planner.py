"""Which steps a rollback runs, in order, and the hash an approval is bound to.

The order is the procedures' emergency rollback, which every other procedure
is a part of: maintenance on, stop background work, back up the current
state, roll back, verify, poll health, maintenance off, restart background
work, then the post-rollback communications. Before all of it come the
targets' `stage` steps, which touch nothing live (a database restored into a
new database and verified there): a rollback that cannot work fails there,
before maintenance mode goes on or any worker stops. Steps marked `always` (maintenance
off, restarting workers) run even after a failure, so a failed rollback does
not also leave the site in maintenance with its workers stopped, unless the
request asked to leave maintenance on for people to look.

Each step's timeout is the action's own unless the config sets one for its kind
(`timeouts:` on the step's target, then on the rolled-back target, then on the
environment); the stored timeouts are the approved ones, and a resume keeps them. The
customer-facing steps (the status page, the e-mail) are planned only when the request chose
to notify customers, with the texts the form previewed; each communication step says who it
tells what.

What a plan is, and the hash an approval is bound to, is `bot.domain.plans`'; this
module reads the live systems to make one. After approval the stored plan is the
contract: `Planner.restore` rebuilds the approved steps from each stored step's
source and spec, without reading the live systems the rollback has already
changed: environment steps from the environment's config, target steps through
`Target.restore(name, spec)`. A target that cannot restore yet falls back to
planning again and taking the steps by name; a step that cannot be rebuilt either
way comes back without an action and the runner stops for a person there (after
running every `always` step it can).

Targets and steps are reached through their packages (`kube_steps.KubernetesTarget`),
whose names are imported on first use: the bot starts without importing the
Kubernetes client, boto3, psycopg or httpx, and imports each when a plan needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import actions.configfiles as config_steps
import actions.database as database_steps
import actions.docker as docker_steps
import actions.http as http_steps
import actions.kubernetes as kube_steps
import actions.loadbalancer as lb_steps
from actions.base import (
    Action,
    Check,
    Finding,
    PlanningError,
    Restorable,
    RollbackPoint,
    Target,
    TargetPlan,
    label_of,
    spec_of,
)
from actions.configfiles import ConfigFilesParams
from actions.database import DatabaseParams
from actions.docker import DockerParams
from actions.kubernetes import KubernetesParams
from actions.loadbalancer import BlueGreenParams
from actions.reads import Reads, ReadsThrough
from bot.config import Environment, FullParams, TargetParams
from bot.domain.plans import Plan, PlannedStep, RestoredStep, StoredStep, with_timeout
from bot.domain.verdict import Holders, Verdict
from bot.execution.assessor import Assessor
from bot.execution.fixes import History

_READS: ContextVar[Reads | None] = ContextVar("planner_reads", default=None)
"""The `Reads` of the request this thread is answering (`Planner.request`), if any."""


TargetFactory = Callable[[TargetParams], Target]
RateSource = Callable[[], float | None]


def target_factory(*, restore_rate: RateSource = lambda: None) -> TargetFactory:
    """Build Targets for config entries; databases learn the restore rate measured before."""

    def build(params: TargetParams) -> Target:
        match params:
            case KubernetesParams():
                return kube_steps.KubernetesTarget(params)
            case DockerParams():
                return docker_steps.DockerTarget(params)
            case BlueGreenParams():
                return lb_steps.BlueGreenTarget(params)
            case ConfigFilesParams():
                return config_steps.ConfigFilesTarget(params)
            case DatabaseParams():
                return database_steps.DatabaseTarget(params, restore_rate=restore_rate())
        raise PlanningError(f"a {params.kind} target has no single rollback of its own")

    return build


@dataclass
class Planner:
    """Builds plans, lists rollback points and runs pre-rollback checks for config targets."""

    factory: TargetFactory = field(default_factory=target_factory)
    drilled: Callable[[DatabaseParams], Finding] | None = None
    """A database's last restore drill, for its verdict (`bot.execution.drill_evidence`)."""
    history: History | None = None
    """The bot's own history the verdict weighs (other incidents' fixes); None: not weighed."""
    _cache: dict[int, Target] = field(default_factory=dict)

    def target(self, params: TargetParams) -> Target:
        """Return the Target for `params`, built once; inside `request`, reading through
        the request's `Reads` where the target can."""
        key = id(params)
        if key not in self._cache:
            self._cache[key] = self.factory(params)
        target, reads = self._cache[key], _READS.get()
        if reads is not None and isinstance(target, ReadsThrough):
            return cast(Target, target.reading(reads))
        return target

    @contextmanager
    def request(self) -> Iterator[Reads]:
        """One person's request: inside it, each read of a target's live state is made once.

        Rendering the modal (points, then checks) and approving (rebuilding the plan)
        read the target through one `Reads` (`actions.reads`) that this makes and hands
        to each target it gives out meanwhile (`target`), so the Deployment and its
        ReplicaSets are read once per render and per approval, not once per question. A
        request inside a request shares the outer one's.
        """
        outer = _READS.get()
        if outer is not None:
            yield outer
            return
        reads = Reads()
        token = _READS.set(reads)
        try:
            yield reads
        finally:
            _READS.reset(token)
            reads.close()

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
        notify_customers: bool = True,
        holders: Holders | None = None,
        assess: bool = True,
    ) -> Plan:
        """Resolve a rollback into concrete steps in the procedures' order, with its verdicts.

        The customer e-mail is in the plan only with `notify_customers` (the form's choice);
        where one is configured and not chosen, a note says customers are not told.
        `holders` names the other incidents holding the environment's targets (for the
        verdict); `assess=False` leaves the verdicts out (rebuilding steps on resume).
        """
        parts: list[TargetPlan] = []
        for member in env.members(target):
            member_point = point if member == target else None
            parts.append(self.target(env.targets[member]).plan(member_point, force=force))
        members = env.members(target)
        workers = self._database_workers(env, members)
        members = [name for name, _ in workers] + list(members)
        parts = [part for _, part in workers] + parts
        phased: list[tuple[str, Action, bool, str | None]] = [
            ("stage", a, False, member)
            for member, part in zip(members, parts, strict=True)
            for a in part.stage
        ]
        if env.maintenance is not None:
            on = http_steps.SetMaintenance(env.maintenance, enabled=True)
            phased.append(("maintenance", on, False, None))
        for phase in ("prepare", "rollback", "verify"):
            phased += [
                (phase, a, False, member)
                for member, part in zip(members, parts, strict=True)
                for a in getattr(part, phase)
            ]
        if env.health_url:
            phased.append(("health", http_steps.HealthCheck(env.health_url), False, None))
        if env.maintenance is not None:
            off = http_steps.SetMaintenance(env.maintenance, enabled=False)
            phased.append(("maintenance", off, not leave_maintenance_on_failure, None))
        phased += [
            ("resume", a, True, member)
            for member, part in reversed(list(zip(members, parts, strict=True)))
            for a in part.resume
        ]
        phased += [
            ("communicate", a, False, None)
            for a in _communications(env, env_name, target, customers=notify_customers)
        ]
        phased += [
            ("keep", a, False, member)
            for member, part in zip(members, parts, strict=True)
            for a in part.keep
        ]
        steps = tuple(
            PlannedStep(
                position=i,
                phase=phase,
                action=configured(env, target, source, action),
                always=always,
                source=source,
                words=told(env, action) if phase == "communicate" else "",
            )
            for i, (phase, action, always, source) in enumerate(phased)
        )
        notes = tuple(note for part in parts for note in part.notes)
        if not notify_customers and (unsent := _not_told(env)):
            notes += (f"Customers are not notified: {unsent} (chosen in the form).",)
        verdicts = self.verdicts(env, target, point, holders=holders, force=force) if assess else ()
        return Plan(
            environment=env_name,
            target=target,
            point=point,
            steps=steps,
            notes=notes,
            verdicts=verdicts,
        )

    def verdicts(
        self,
        env: Environment,
        target: str,
        point: str | None,
        *,
        holders: Holders | None = None,
        force: bool = False,
    ) -> tuple[Verdict, ...]:
        """Weigh whether rolling `target` back to `point` can restore service
        (bot.domain.verdict); `force`: the plan runs past its failing checks."""
        assessor = Assessor(
            self.target,
            holders or (lambda name: None),
            force=force,
            drilled=self.drilled,
            history=self.history,
        )
        return assessor.assess(env, target, point)

    def _database_workers(
        self, env: Environment, members: list[str]
    ) -> list[tuple[str, TargetPlan]]:
        """A database rollback without a Kubernetes member stops the environment's workers
        first and starts them last (the procedures' pre-rollback checklist).

        Each part names the Kubernetes target it came from, so on resume that target's
        `restore` rebuilds the worker steps."""
        kinds = [env.targets[m] for m in members]
        if not any(isinstance(p, DatabaseParams) for p in kinds) or any(
            isinstance(p, KubernetesParams) for p in kinds
        ):
            return []
        kube = [
            (name, p)
            for name, p in env.targets.items()
            if isinstance(p, KubernetesParams) and p.workers
        ]
        return [
            (
                name,
                TargetPlan(
                    prepare=[
                        kube_steps.StopWorkers(
                            apps=apps, namespace=p.namespace, workers=tuple(p.workers)
                        )
                    ],
                    resume=[
                        kube_steps.StartWorkers(
                            apps=apps, namespace=p.namespace, workers=tuple(p.workers)
                        )
                    ],
                ),
            )
            for name, p in kube
            for apps in [cast(kube_steps.KubernetesTarget, self.target(p)).apps]
        ]

    def restore(
        self,
        *,
        env_name: str,
        env: Environment,
        target: str,
        point: str | None,
        force: bool,
        stored: list[StoredStep],
    ) -> list[RestoredStep]:
        """Rebuild the approved steps from what was stored, without reading live systems.

        Environment steps come from the environment's config, target steps from
        `Target.restore(name, spec)`. A target without `restore` (or a run stored
        before steps carried their spec) is planned again and its steps taken by
        name; where that fails too, the step comes back with `problem` set.
        """
        replanned = _Replanned(
            self, env_name=env_name, env=env, target=target, point=point, force=force
        )
        restored = []
        for step in stored:
            try:
                action = self._restore_step(env, env_name, target, step, replanned)
            except Exception as exc:
                detail = (
                    str(exc) if isinstance(exc, PlanningError) else f"{type(exc).__name__}: {exc}"
                )
                restored.append(
                    RestoredStep(step, None, f"{step.label} could not be rebuilt: {detail}")
                )
                continue
            if action.name != step.name:
                problem = f"{step.label} could not be rebuilt: it came back as {action.name}"
                restored.append(RestoredStep(step, None, problem))
                continue
            restored.append(RestoredStep(step, with_timeout(action, step.timeout)))
        return restored

    def _restore_step(
        self,
        env: Environment,
        env_name: str,
        target: str,
        step: StoredStep,
        replanned: _Replanned,
    ) -> Action:
        if step.legacy:
            return replanned.by_position(step)
        if step.source is None:
            return environment_step(env, env_name, target, step.name, step.spec)
        if step.source not in env.targets:
            raise PlanningError(f"{step.source} is no longer in the config file")
        member = self.target(env.targets[step.source])
        if isinstance(member, Restorable):
            return member.restore(step.name, dict(step.spec))
        return replanned.by_source(step)


@dataclass
class _Replanned:
    """The fallback for targets that cannot restore: plan again (once), take steps by name."""

    planner: Planner
    env_name: str
    env: Environment
    target: str
    point: str | None
    force: bool
    _plan: Plan | None = None
    _error: Exception | None = None

    def _build(self) -> Plan:
        if self._error is not None:
            raise self._error
        if self._plan is None:
            try:
                self._plan = self.planner.build(
                    env_name=self.env_name,
                    env=self.env,
                    target=self.target,
                    point=self.point,
                    force=self.force,
                    assess=False,
                )
            except Exception as exc:
                self._error = exc
                raise
        return self._plan

    def by_position(self, step: StoredStep) -> Action:
        """The action at the same position of a new plan, when it has the same name."""
        steps = self._build().steps
        if step.position < len(steps) and steps[step.position].action.name == step.name:
            return steps[step.position].action
        raise PlanningError("planning again gave different steps")

    def by_source(self, step: StoredStep) -> Action:
        """The action of the same name from the same config target in a new plan."""
        for planned in self._build().steps:
            if (
                planned.source == step.source
                and planned.phase == step.phase
                and planned.action.name == step.name
            ):
                return planned.action
        raise PlanningError(f"{step.source} no longer plans a {step.name} step")


def environment_step(
    env: Environment, env_name: str, target: str, name: str, spec: dict[str, Any]
) -> Action:
    """Rebuild an environment-level step (maintenance, health, communications) by name.

    URLs and tokens come from the config; the spec holds only the step's own
    parameters. An empty spec gives the step exactly as `Planner.build` makes it.
    """
    timeout = spec.get("timeout")
    extra: dict[str, Any] = {} if timeout is None else {"timeout": float(timeout)}
    if name in ("http.maintenance_on", "http.maintenance_off"):
        if env.maintenance is None:
            raise PlanningError("maintenance is no longer configured")
        enabled = bool(spec.get("enabled", name == "http.maintenance_on"))
        return http_steps.SetMaintenance(env.maintenance, enabled=enabled, **extra)
    if name == "http.health" or (name.startswith("http.") and "expect_status" in spec):
        if not env.health_url:
            raise PlanningError("health_url is no longer configured")
        return http_steps.HealthCheck(
            env.health_url,
            expect_status=int(spec.get("expect_status", 200)),
            check=str(spec.get("name", "health")),
            **extra,
        )
    defaults = {a.name: a for a in _communications(env, env_name, target)}
    if name not in defaults:
        raise PlanningError(f"the environment no longer has a {name} step")
    if not spec:
        return defaults[name]
    comms = env.communications
    if name == "http.status_page" and comms.status_page is not None:
        return http_steps.UpdateStatusPage(
            comms.status_page, status=spec["status"], message=spec["message"], **extra
        )
    if name == "http.webhook" and comms.internal_webhook is not None:
        return http_steps.NotifyWebhook(
            comms.internal_webhook,
            text=spec["text"],
            fields=dict(spec["fields"]),
            color=str(spec.get("color", "good")),
            **extra,
        )
    if name == "http.customer_email" and comms.customer_email is not None:
        return http_steps.SendCustomerEmail(
            comms.customer_email, subject=spec["subject"], body=spec["body"], **extra
        )
    raise PlanningError(f"the environment no longer has a {name} step")


def configured(env: Environment, target: str, source: str | None, action: Action) -> Action:
    """The action with the timeout the config sets for its kind (`timeouts:`), if any."""
    seconds = env.step_timeout(target, source, action.name)
    return action if seconds is None else with_timeout(action, seconds)


def told(env: Environment, action: Action) -> str:
    """Who a communication step tells what, in one line for the plan."""
    comms, spec = env.communications, spec_of(action)
    if action.name == "http.status_page" and comms.status_page is not None:
        return (
            f"Status page ({_host(comms.status_page.url)}): {spec.get('status')}, "
            f"“{spec.get('message')}”"
        )
    if action.name == "http.webhook" and comms.internal_webhook is not None:
        return f"Team webhook ({_host(comms.internal_webhook.url)}): “{spec.get('text')}”"
    if action.name == "http.customer_email" and comms.customer_email is not None:
        return f"E-mail customers ({comms.customer_email.to}): “{spec.get('subject')}”"
    return label_of(action)


def _host(url: str) -> str:
    return urlsplit(url).hostname or "configured URL"


STATUS_PAGE_MESSAGE = (
    "System has been rolled back and is now operational. We are investigating the root cause."
)
EMAIL_SUBJECT = "Service Restored"
EMAIL_BODY = (
    "We have resolved the service issues and the service is now fully operational. "
    "We apologize for any inconvenience caused."
)


def _not_told(env: Environment) -> str:
    """What customers would have been sent and are not, in words ('' when nothing is set up)."""
    comms = env.communications
    unsent = []
    if comms.status_page is not None:
        unsent.append(f"no status page update at {_host(comms.status_page.url)}")
    if comms.customer_email is not None:
        unsent.append(f"no e-mail to {comms.customer_email.to}")
    return ", ".join(unsent)


def customer_preview(env: Environment) -> list[str]:
    """The exact customer-facing texts a rollback would send, as the form previews them."""
    comms = env.communications
    lines = []
    if comms.status_page is not None:
        lines.append(
            f"Status page ({_host(comms.status_page.url)}): operational, “{STATUS_PAGE_MESSAGE}”"
        )
    if comms.customer_email is not None:
        lines.append(f"E-mail to {comms.customer_email.to}: “{EMAIL_SUBJECT}”: {EMAIL_BODY}")
    return lines


def _communications(
    env: Environment, env_name: str, target: str, *, customers: bool = True
) -> list[Action]:
    """The communications steps: the team's webhook always; what customers see (the status
    page and the e-mail) only when the request chose to notify them."""
    comms = env.communications
    actions: list[Action] = []
    if comms.status_page is not None and customers:
        actions.append(
            http_steps.UpdateStatusPage(
                comms.status_page, status="operational", message=STATUS_PAGE_MESSAGE
            )
        )
    if comms.internal_webhook is not None:
        actions.append(
            http_steps.NotifyWebhook(
                comms.internal_webhook,
                text=f"Post-Rollback Status Update: {target} in {env_name}",
                fields={
                    "Status": "System Operational",
                    "Next Steps": "Root cause analysis in progress",
                },
            )
        )
    if comms.customer_email is not None and customers:
        actions.append(
            http_steps.SendCustomerEmail(
                comms.customer_email, subject=EMAIL_SUBJECT, body=EMAIL_BODY
            )
        )
    return actions
