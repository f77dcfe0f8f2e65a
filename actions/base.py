"""The contract between the bot and the systems it rolls back.

An `Action` is one step of a plan. The bot shows `describe()` before anyone
approves, so it must name the exact thing that will happen (resolved revision,
backup file, target group), and two plans with equal descriptions are the same
plan: the approval hash is computed from them.

Errors decide what happens next, as in kopf: `PermanentError` stops the plan,
`TemporaryError(delay=...)` asks the runner to call `run` again after `delay`
seconds while the step's deadline allows.

A `Target` is one configured thing that can be rolled back (a Deployment, a
database, a listener, a configuration directory). It lists its rollback points
for the modal, runs the checks of the pre-rollback checklist that a machine can
verify, and turns a chosen point into a `TargetPlan` whose phases the bot
orders around maintenance mode and health polling.

After approval the stored plan is the contract. Each planned step is stored
with its action's `spec()` (JSON parameters, never secrets or clients) and the
config target it came from; on resume after a crash the runner rebuilds each
step with that target's `restore(name, spec)` instead of planning again from a
live system that the rollback itself has already changed. A `Step` writes its
fields once: its spec is its dataclass fields dumped, its rebuild those fields
validated back, with the parts its target gives (`given()`: clients, config). So an action's
`run()` must tell "already done" (return a skipped StepResult saying so) from
"not started" (do it) from "half done" (finish it, or raise PermanentError
saying what a person must check), from the live system and `ctx.memory`.

Nothing in `actions` imports `bot` or Slack.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import time
import typing
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, Self, runtime_checkable

import pydantic

from actions.clock import SYSTEM, Ticker


class ActionError(Exception):
    """Base of the errors an action raises on purpose."""


class PermanentError(ActionError):
    """Stop the plan: trying again will not help."""


class TemporaryError(ActionError):
    """Try again after `delay` seconds, while the step's deadline allows."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PlanningError(ActionError):
    """The requested rollback cannot be planned (no such revision, backup missing, ...)."""


@dataclass
class StepContext:
    """What a running step may use.

    `memory` is durable: whatever a step stores there is saved before the
    runner moves on and survives a crash of the bot, so a later step (or the
    same step resumed) can read it. Keys are plain strings, values JSON.
    `emit` sends one line of output to the incident thread as it happens.
    """

    incident_id: str
    run_id: str
    deadline: float
    memory: MutableMapping[str, Any] = field(default_factory=dict)
    emit: Callable[[str], None] = lambda line: None
    ticker: Ticker = SYSTEM
    """The clock `deadline` is on, and how a step waits (the runner's)."""

    def remaining(self) -> float:
        """Seconds left before the step's deadline (never negative)."""
        return max(0.0, self.deadline - self.ticker.monotonic())

    @classmethod
    def for_test(cls, *, timeout: float = 30.0, **kwargs: Any) -> StepContext:
        """Build a context with a deadline `timeout` seconds from now."""
        kwargs.setdefault("incident_id", "INC-TEST")
        kwargs.setdefault("run_id", "run-test")
        return cls(deadline=time.monotonic() + timeout, **kwargs)


@dataclass(frozen=True)
class StepResult:
    """What a finished step reports: one line, its full output, and facts to keep."""

    summary: str
    output: str = ""
    skipped: bool = False
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Action(Protocol):
    """One step of a rollback plan."""

    name: str
    """Short stable name, e.g. `kubernetes.rollout_undo`."""

    idempotent: bool
    """True when running the step again after a crash mid-step is safe."""

    timeout: float
    """Seconds the step may take, retries included."""

    def describe(self) -> str:
        """Say exactly what the step will do; shown before approval."""
        ...

    def run(self, ctx: StepContext) -> StepResult:
        """Do the step, or raise PermanentError / TemporaryError."""
        ...


@dataclass(frozen=True)
class RollbackPoint:
    """A place a target can be rolled back to, as listed in the modal."""

    ref: str
    """What a plan is built from: a revision number, a backup path, an ISO time."""
    label: str
    """One line for a person: `rev 4 · voxflow/api:v1.2.3 · 2h ago`."""
    created_at: datetime | None = None
    is_current: bool = False
    avoid: str = ""
    """Why this point is never the default (the bad version rolled away from, the bot's own
    pre-rollback backup): it is offered, labelled with this, but needs an explicit choice."""
    version: str = ""
    """What the point runs, where that outlives its ref: Kubernetes' undo turns revision 2
    into revision 4, the images stay. Empty: the ref itself names the version."""
    unready: str = ""
    """For the running point: what of it is not ready yet ('only 1 of its 3 pods ready'),
    so nothing says a version runs before it serves. Empty: ready, or the target cannot
    tell."""

    @property
    def key(self) -> str:
        """The version this point runs, as the bot remembers versions (healthy, rolled away)."""
        return self.version or self.ref


def running_point(points: Iterable[RollbackPoint]) -> RollbackPoint | None:
    """The point that runs now (`is_current`), or None when the target lists none."""
    return next((p for p in points if p.is_current), None)


@dataclass(frozen=True)
class Check:
    """One machine-verified line of the pre-rollback checklist."""

    name: str
    ok: bool
    detail: str = ""


class Level(enum.StrEnum):
    """How much one piece of reversibility evidence weighs, least first."""

    OK = "ok"
    LOSS = "loss"
    """The rollback works but loses data (writes after the restore point, a dropped column)."""
    RISKY = "risky"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Finding:
    """One line of evidence for the reversibility verdict, in words for people.

    `basis` is what the plan hash covers; it leaves out what moves by itself
    (an age, a row estimate), so an approval outlives the clock but not a change
    of fact. Empty: the text itself.
    """

    level: Level
    text: str
    basis: str = ""

    @property
    def hashed(self) -> str:
        """The stable part of the finding that an approval is bound to."""
        return f"{self.level.value}: {self.basis or self.text}"


@runtime_checkable
class Evidenced(Protocol):
    """A target that says, before approval, whether rolling back to `ref` can restore service."""

    def evidence(self, ref: str | None) -> list[Finding]:
        """Return the findings for rolling back to `ref` (None: the default point)."""
        ...


@dataclass
class TargetPlan:
    """A target's steps, by phase; the bot puts the phases in the procedures' order.

    stage: before maintenance mode goes on, touching nothing live (restore a dump into a new
        database and verify it there): a failure here stops the plan while the site still
        runs as it did, so a rollback that cannot work is refused before anyone notices
    prepare: before anything changes (stop workers, back up the current state)
    rollback: the change itself
    verify: confirm the change took (rollout status, verification queries)
    resume: put back what prepare stopped (restart workers); runs even after a failure
    keep: last, after maintenance mode is off and people are told: keep a copy of what the
        rollback replaced (a dump of the database the swap set aside), off the downtime
    """

    stage: list[Action] = field(default_factory=list)
    prepare: list[Action] = field(default_factory=list)
    rollback: list[Action] = field(default_factory=list)
    verify: list[Action] = field(default_factory=list)
    resume: list[Action] = field(default_factory=list)
    keep: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Specified(Protocol):
    """An action that can be rebuilt after a crash from the JSON it was planned with."""

    def spec(self) -> dict[str, Any]:
        """Return the JSON parameters that rebuild this exact action (no secrets, no clients)."""
        ...


LABELS = {
    "http.maintenance_on": "Maintenance mode on",
    "http.maintenance_off": "Maintenance mode off",
    "http.status_page": "Update the status page",
    "http.webhook": "Notify the team (webhook)",
    "http.customer_email": "E-mail customers",
    "kubernetes.rollout_status": "Wait for the rollout to finish",
    "kubernetes.stop_workers": "Stop the workers",
    "kubernetes.start_workers": "Start the workers again",
    "configfiles.backup": "Back up the current configuration",
    "configfiles.restore": "Restore the configuration",
    "configfiles.restart": "Restart the services",
    "docker.swap_container": "Swap the container",
    "loadbalancer.switch_traffic": "Switch traffic",
    "loadbalancer.restore_traffic": "Restore traffic",
    "database.verify": "Verify the restored database",
    "database.swap": "Swap in the restored database",
}
"""Words for people, by action name, for actions without a `label()` of their own."""


def label_of(action: Action) -> str:
    """A step's name for people: `Maintenance mode on`, `Roll back voxflow-api to rev 3 (…)`.

    An action says it with a `label()` method (or a non-empty `label` string); else the
    table above; else the name made readable (`kubernetes.rollout_status` → `Rollout status`),
    so every step has words even before its target adds them.
    """
    own = getattr(action, "label", None)
    said = own() if callable(own) else own
    if isinstance(said, str) and said.strip():
        return said.strip()
    return LABELS.get(action.name) or readable(action.name)


def readable(name: str) -> str:
    """`kubernetes.rollout_status` → `Rollout status`."""
    words = name.rsplit(".", 1)[-1].replace("_", " ").strip()
    return (words[:1].upper() + words[1:]) or name


SPEC = "spec"
"""The key of a field's metadata that says how its spec keeps it (see `given`, `sparse`)."""
KEY = "spec-key"
"""The key of a field's metadata that names its key in the spec (see `stored_as`)."""


def fixed(value: Any, *, init: Literal[False] = False) -> Any:
    """A value of the class, not of one step: `name`, `idempotent` (never stored, never set)."""
    return field(default=value, init=init)


def given(*, default: Any = dataclasses.MISSING, kw_only: bool = True) -> Any:
    """A field the spec leaves out: its target gives it again on rebuild (a client, the
    target's config or timings), or its default holds. Not compared: two steps are equal
    when they store the same spec."""
    return field(
        default=default, repr=False, compare=False, kw_only=kw_only, metadata={SPEC: "given"}
    )


def sparse(*, default: Any) -> Any:
    """A field the spec keeps only when it is not empty (specs stored before it existed)."""
    return field(default=default, metadata={SPEC: "sparse"})


def stored_as(key: str, *, default: Any) -> Any:
    """A field the spec keeps under another key (one that names a step field, like `name`)."""
    return field(default=default, metadata={KEY: key})


@dataclass(frozen=True)
class _Stored:
    """How one field of a step goes into its spec and comes back."""

    name: str
    key: str
    adapter: pydantic.TypeAdapter[Any]
    required: bool
    sparse: bool


_STORED: dict[type[Step], tuple[_Stored, ...]] = {}


def _stored(step: type[Step]) -> tuple[_Stored, ...]:
    if step in _STORED:
        return _STORED[step]
    hints = typing.get_type_hints(step)
    _STORED[step] = tuple(
        _Stored(
            f.name,
            f.metadata.get(KEY, f.name),
            pydantic.TypeAdapter(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            f.metadata.get(SPEC) == "sparse",
        )
        for f in dataclasses.fields(step)  # type: ignore[arg-type]
        if f.init and f.metadata.get(SPEC) != "given"
    )
    return _STORED[step]


def _given(step: type[Step]) -> frozenset[str]:
    fields = dataclasses.fields(step)  # type: ignore[arg-type]
    return frozenset(f.name for f in fields if f.metadata.get(SPEC) == "given")


@typing.dataclass_transform(
    kw_only_default=True, field_specifiers=(field, fixed, given, sparse, stored_as)
)
class Step(abc.ABC):
    """The base of an action whose fields are its spec: each subclass is a dataclass.

    Every action declares, in this order: `name` and `idempotent` (`fixed`), `timeout`,
    the fields its target gives (`given`), the fields it stores; then `describe()`,
    `label()`, `run(ctx)`. `spec()` dumps the stored fields as JSON (tuples become lists,
    models their JSON); `rebuild(spec, **given)` validates them back (pydantic's lax
    mode: the JSON types come back as the declared ones).
    """

    name: str
    idempotent: bool
    timeout: float

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(kw_only=True)(cls)

    def spec(self) -> dict[str, Any]:
        """The JSON that rebuilds this exact step (no secrets, no clients)."""
        spec = {}
        for kept in _stored(type(self)):
            value = getattr(self, kept.name)
            if not (kept.sparse and not value):
                spec[kept.key] = kept.adapter.dump_python(value, mode="json")
        return spec

    @abc.abstractmethod
    def describe(self) -> str:
        """Say exactly what the step will do; shown before approval."""

    def label(self) -> str:
        """Words for people (the progress message): the table's, else the name's."""
        return LABELS.get(self.name) or readable(self.name)

    @abc.abstractmethod
    def run(self, ctx: StepContext) -> StepResult:
        """Do the step, or raise PermanentError / TemporaryError."""

    @classmethod
    def rebuild(cls, spec: Mapping[str, Any], **given: Any) -> Self:
        """The step `spec()` stored, with the `given` fields this step has (others ignored)."""
        values = {k: v for k, v in given.items() if k in _given(cls)}
        for kept in _stored(cls):
            if kept.key in spec:
                try:
                    values[kept.name] = kept.adapter.validate_python(spec[kept.key])
                except pydantic.ValidationError as exc:
                    raise PlanningError(
                        f"the stored spec of {cls.name} cannot be read: {kept.key}: "
                        f"{exc.errors()[0]['msg']}; plan the rollback again"
                    ) from exc
            elif kept.required:
                raise PlanningError(
                    f"the stored spec of {cls.name} cannot be read: it lacks {kept.key}; "
                    "plan the rollback again"
                )
        return cls(**values)


def rebuild_step(
    steps: Iterable[type[Step]], where: str, name: str, spec: Mapping[str, Any], **given: Any
) -> Action:
    """Rebuild the step called `name`, one of `steps`, from its stored spec (`where`: whose)."""
    for step in steps:
        if step.name == name:
            return step.rebuild(spec, **given)
    raise PlanningError(f"{where} has no step {name!r}; plan the rollback again")


def spec_of(action: Action) -> dict[str, Any]:
    """Return `action.spec()` where the action has one, else an empty spec."""
    return dict(action.spec()) if isinstance(action, Specified) else {}


@runtime_checkable
class Restorable(Protocol):
    """A target that rebuilds its approved steps from their stored specs (for resume)."""

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild the step `name` from `spec` without reading the live system."""
        ...


class Target(Protocol):
    """One configured system that can be rolled back."""

    def points(self) -> list[RollbackPoint]:
        """List rollback points, newest first, the current state marked."""
        ...

    def checks(self, ref: str | None) -> list[Check]:
        """Run the pre-rollback checks a machine can verify for `ref` (None: default)."""
        ...

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Resolve `ref` (None: the default point) into concrete steps, or raise PlanningError."""
        ...
