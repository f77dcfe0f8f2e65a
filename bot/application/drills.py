"""Rollback drills: the procedures' "Rollback Testing" script, run by the bot on a non-production
environment, with the same plan rendering, approvals and thread as a real rollback.

    /rollback drill <target> <env>

The seed's script deploys a test version, verifies it, rolls back, verifies the
rollback. Here the version under test is the one running now, so a drill is:

1. **deploy marker**: record what runs now (the `drill.marker` step checks the live
   system still runs the version the drill was planned from, and keeps it);
2. **roll back** to the default rollback point with the target's whole rollback plan
   (maintenance, workers, GitOps guard, undo, rollout status, health), without the
   public communications (no status page or customer e-mail for a rehearsal);
3. **roll forward** to the version that was running, and **verify** it (rollout status,
   health).

The roll forward comes after maintenance is off and the workers are back, as the
next deploy would: the rollback part is exactly what an incident would run, and
the time to recover is measured on it alone (`measure`).

The plan itself (marker, rollback, roll-forward) is `bot.execution.drill_plans`'; the
runner and the approval plan every run through `bot.execution.planning`, which asks
there for a drill's. Here are the use cases around drills.

Production is refused unless configured: `drills_allowed` (default false for an
environment named prod or production, true otherwise), except a database's restore
drill (the newest backup restored into scratch and dropped: nothing live is written),
which runs anywhere. One approval is enough (`drill_approvals_required`, default 1); the
requester still cannot approve. Scheduled drills start by themselves
(`bot.application.drill_schedule`).

Each drill is a row in `drills` (migration 0010): when its run ends, `settle`
measures the time to recover (first change to the rollback verified), each step's
duration, each config target's share and the roll-forward (a restore drill: its
point-in-time recovery and throughput, kept in the steps' entries: the table has no
columns for them), and whether the reversibility verdict the plan carried held.
`settle_pending` repairs rows of runs that ended while this process was down, so the
record is never lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from actions.base import ActionError, Level
from actions.database import restored_words
from bot.config import Environment, FullParams, RollbackConfig
from bot.domain.decision import Answers, Severity
from bot.domain.plans import Plan, StoredStep
from bot.domain.recovery import spoken
from bot.domain.states import RunKind
from bot.domain.verdict import worst
from bot.execution.drill_plans import (
    CLEANUP,
    FORWARD,
    MARKER,
    PITR,
    build_drill,
    drill_allowed,
    drill_points,
    is_drill,
    is_restore_drill,
)
from bot.execution.workflow import Refused
from bot.persistence.models import Drill, Run
from bot.persistence.store import StepView, Store, TargetBusy

if TYPE_CHECKING:  # flows build the Drills; the runner's Progress is wrapped here
    from bot.application.flows import Flows
    from bot.application.requests import Opened
    from bot.execution.progress import Progress

log = logging.getLogger(__name__)

SOURCE = "drill"
"""The incident source of a drill."""
FINAL = ("succeeded", "failed", "rejected", "expired", "cancelled")
RECOVERED_PHASES = ("rollback", "verify", "health")
AFTER = ("resume", "keep")
"""Phases not counted in a target's own time (workers restarted, the replaced database dumped)."""
HELD_WHEN_SUCCEEDED = ("safe", "safe_with_data_loss")


# measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What a finished drill measured.

    A restore drill (a database's) has no roll-forward: `forward_seconds` is None, and
    `pitr_seconds` is its point-in-time recovery (restore into the scratch instance,
    verification, copy, verification of the copy); `bytes_per_second` is the dump
    restore's throughput (pg_restore's bytes of dump per second).
    """

    recover_seconds: float | None
    forward_seconds: float | None
    steps: list[dict[str, Any]]
    targets: dict[str, float]
    pitr_seconds: float | None = None
    restored_bytes: int | None = None
    bytes_per_second: float | None = None

    @property
    def restore_drill(self) -> bool:
        """Whether this is a database's restore drill."""
        return any(s["part"] in (PITR, CLEANUP) for s in self.steps)


def _seconds(record: StepView | None) -> float | None:
    if record is None or record.started_at is None or record.finished_at is None:
        return None
    return max(0.0, (record.finished_at - record.started_at).total_seconds())


def _part(step: StoredStep) -> str:
    if step.name == MARKER:
        return "marker"
    return step.phase if step.phase in (FORWARD, PITR, CLEANUP) else "rollback"


def measure(plan: list[StoredStep], records: list[StepView]) -> Measured:
    """Time to recover (first change to the rollback verified), per step and per target;
    a restore drill's point-in-time recovery and throughput."""
    by_position = {r.position: r for r in records}
    steps: list[dict[str, Any]] = []
    targets: dict[str, float] = {}
    back = [s for s in plan if _part(s) == "rollback"]
    forward = [s for s in plan if s.phase == FORWARD]
    pitr = [s for s in plan if s.phase == PITR]
    restored: dict[str, Any] = {}
    for step in plan:
        record = by_position.get(step.position)
        seconds = _seconds(record)
        part = _part(step)
        entry = {
            "position": step.position,
            "name": step.name,
            "label": step.words,
            "part": part,
            "state": record.state if record else "not run",
            "seconds": seconds,
        }
        data = record.data if record is not None else {}
        if "restore_bytes_per_second" in data:
            entry["bytes_per_second"] = float(data["restore_bytes_per_second"])
            entry["bytes"] = int(data.get("bytes") or 0)
            if part == "rollback" and not restored:
                restored = entry
        steps.append(entry)
        if part == "rollback" and step.source and seconds is not None and step.phase not in AFTER:
            targets[step.source] = targets.get(step.source, 0.0) + seconds
    return Measured(
        recover_seconds=_span(back, by_position, RECOVERED_PHASES),
        forward_seconds=_span(forward, by_position, None),
        steps=steps,
        targets=targets,
        pitr_seconds=_span(pitr, by_position, None),
        restored_bytes=restored.get("bytes"),
        bytes_per_second=restored.get("bytes_per_second"),
    )


def _span(
    steps: list[StoredStep], records: dict[int, StepView], until: tuple[str, ...] | None
) -> float | None:
    """From the first step's start to the end of the last step of `until` phases (all: None)."""
    started = [records[s.position] for s in steps if s.position in records]
    first = next((r.started_at for r in started if r.started_at is not None), None)
    ends = [s for s in steps if until is None or s.phase in until]
    last = [records[s.position] for s in ends if s.position in records]
    if first is None or not last or any(r.state not in ("succeeded", "skipped") for r in last):
        return None
    end = max((r.finished_at for r in last if r.finished_at is not None), default=None)
    return None if end is None else max(0.0, (end - first).total_seconds())


KINDS = {
    Level.OK: "safe",
    Level.LOSS: "safe_with_data_loss",
    Level.RISKY: "risky",
    Level.BLOCKED: "blocked",
}
"""The drill record's verdict kind for the worst level among the plan's targets."""


def verdict_of(run: Run, plan: Plan | None = None) -> str | None:
    """The drill's verdict kind: its worst target verdict's, from the plan or the run's."""
    verdicts = plan.verdicts if plan is not None else run.verdicts or ()
    if not verdicts:
        return None
    return KINDS[worst([v.level for v in verdicts])]


def verdict_held(verdict: str | None, *, succeeded: bool) -> bool | None:
    """Did the verdict hold? A safe one if the drill succeeded, a blocked one if it failed.

    A risky verdict predicts neither (it names what could not be verified, such as a
    registry out of reach), so the drill proves nothing about it: None.
    """
    if verdict is None or verdict == "risky":
        return None
    return succeeded if verdict in HELD_WHEN_SUCCEEDED else not succeeded


# the use cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillStatus:
    """A target's drill standing, for `/rollback drills`, the App Home tab and the modal.

    `last` is the newest drill that ended, whatever its end; `recovered` the newest that
    succeeded with a measured time to recover. Only a recovered drill proves anything, so
    a target is `due` when it has none, or none younger than `every` (its schedule's, else
    the environment's `drill_every`). `rto`: the schedule's recovery-time objective.
    `trend`: the time to recover of its last drills, and `rollbacks` of its last real
    rollbacks (approval to success), oldest first.
    """

    environment: str
    target: str
    last: Drill | None
    recovered: Drill | None
    now: datetime
    every: timedelta
    rto: timedelta | None = None
    trend: tuple[float, ...] = ()
    rollbacks: tuple[float, ...] = ()

    @property
    def flags(self) -> list[str]:
        """What needs a person: the last drill failed, took longer than the RTO, or is due."""
        out = []
        if self.last is not None and self.last.state == "failed":
            out.append("failed")
        took = self.recovered.recover_seconds if self.recovered is not None else None
        if self.rto is not None and took is not None and took > self.rto.total_seconds():
            out.append("slower than the RTO")
        if self.due:
            out.append("overdue")
        return out

    def age(self, drill: Drill | None) -> timedelta | None:
        """How long ago `drill` ended."""
        return None if drill is None else self.now - (drill.finished_at or drill.created_at)

    @property
    def due(self) -> bool:
        """Never drilled with success, or not within `every`."""
        age = self.age(self.recovered)
        return age is None or age > self.every

    def line(self) -> str:
        """One line for people (no Slack markup)."""
        if self.last is None:
            return f"{self.target} in {self.environment}: never drilled"
        said = f"{self.target} in {self.environment}: last drill {_ago(self.age(self.last))}"
        if self.recovered is not None and self.last.run_id == self.recovered.run_id:
            said += f", time to recover {spoken(self.last.recover_seconds)}"
        else:
            said += f" {self.last.state}, no time to recover"
            if self.recovered is not None:
                said += (
                    f"; last recovered {_ago(self.age(self.recovered))} in "
                    f"{spoken(self.recovered.recover_seconds)}"
                )
        if self.last.verdict is not None and self.last.verdict_held is not None:
            held = "held" if self.last.verdict_held else "did not hold"
            said += f"; verdict {self.last.verdict.replace('_', ' ')} {held}"
        if self.due:
            said += f" (no successful drill within {spoken(self.every.total_seconds())})"
        took = self.recovered.recover_seconds if self.recovered is not None else None
        if "slower than the RTO" in self.flags and self.rto is not None:
            said += f"; {spoken(took)} is over the RTO of {spoken(self.rto.total_seconds())}"
        return said


TREND = 8
"""How many of the last drills and real rollbacks a target's trend shows."""


def _recoveries(runs: list[Run]) -> list[float]:
    """Real rollbacks' time to recover (approval to success), newest first; drills left out."""
    return [
        (r.finished_at - r.approved_at).total_seconds()
        for r in runs
        if r.kind != RunKind.DRILL and r.finished_at is not None and r.approved_at is not None
    ]


def _ago(age: timedelta | None) -> str:
    return "n/a" if age is None else f"{spoken(age.total_seconds())} ago"


def drill_help(statuses: list[DrillStatus], *, environment: str, target: str) -> str:
    """The modal's "can the issue be fixed quickly?" help: how long the last drill took."""
    timed = [s for s in statuses if s.target == target and s.recovered is not None]
    timed.sort(key=lambda s: (s.environment != environment, s.age(s.recovered) or timedelta.max))
    if not timed:
        return f"{target} has never been drilled: nobody knows how long rolling it back takes."
    best = timed[0]
    assert best.recovered is not None
    where = "" if best.environment == environment else f" in {best.environment}"
    said = (
        f"rolling back {target} took {spoken(best.recovered.recover_seconds)} in the last drill"
        f"{where} ({_ago(best.age(best.recovered))})"
    )
    if best.due:
        said += f"; that drill is older than {spoken(best.every.total_seconds())}, drill it again"
    return said[:1].upper() + said[1:] + "."


def target_status(
    store: Store, env_name: str, env: Environment, target: str, *, now: datetime
) -> DrillStatus:
    """One target's drill standing (`Drills.statuses`, the drill report's trend chart)."""
    ended = store.drills.find(environment=env_name, target=target, states=FINAL)
    last = ended[0] if ended else None
    timed = [d for d in ended if d.state == "succeeded" and d.recover_seconds is not None]
    recovered = timed[0] if timed else None
    schedule = env.target_drills.get(target)
    rollbacks = store.runs.find(
        environment=env_name, target=target, states=("succeeded",), limit=TREND * 2
    )
    return DrillStatus(
        env_name,
        target,
        last,
        recovered,
        now,
        schedule.every if schedule is not None else env.drill_every,
        rto=schedule.rto if schedule is not None else None,
        trend=tuple(d.recover_seconds or 0.0 for d in reversed(timed[:TREND])),
        rollbacks=tuple(reversed(_recoveries(rollbacks)[:TREND])),
    )


@dataclass
class Drills:
    """Open drills, record what they measured, and say which targets are due."""

    flows: Flows

    @property
    def store(self) -> Store:
        return self.flows.store

    @property
    def config(self) -> RollbackConfig:
        return self.flows.config

    def open(self, *, environment: str, target: str, requester: str) -> Opened:
        """Plan and request a drill, open its thread; raise Refused saying why not."""
        env = self.config.environment(environment)
        self.config.target(environment, target)
        if not drill_allowed(env, environment, target):
            raise Refused(
                f"drills are not allowed in {environment} (set `drills_allowed: true` for it "
                "in the config file to allow them); drill a staging environment instead"
            )
        try:
            plan = build_drill(self.flows.planner, env_name=environment, env=env, target=target)
            from_version, to_version = self._versions(env, environment, target, plan)
        except (ActionError, OSError) as exc:
            raise Refused(f"the drill could not be planned: {exc}") from None
        try:
            with self.store.unit():  # the runner sees the drill whole or not at all
                incident, run = self.flows.workflow.request(
                    plan=plan,
                    requester=requester,
                    severity=Severity.LOW,
                    answers=Answers(),
                    summary=f"Rollback drill of {target} in {environment}",
                    source=SOURCE,
                    kind=RunKind.DRILL,
                )
                self.store.runs.set_versions(
                    run.id, from_version=from_version, to_version=to_version
                )
                self.store.runs.set_approvals_required(run.id, env.drill_approvals_required)
                self.store.drills.add(
                    run_id=run.id,
                    incident_id=incident.id,
                    environment=environment,
                    target=target,
                    requester=requester,
                    state="requested",
                    from_version=from_version,
                    to_version=to_version,
                    verdict=verdict_of(run, plan),
                )
                fresh = self.store.runs.get(run.id) or run
        except TargetBusy as exc:
            raise Refused(str(exc)) from None
        return self.flows.open_requested(incident, fresh)

    def _versions(
        self, env: Environment, environment: str, target: str, plan: Plan
    ) -> tuple[str, str]:
        """What the drill goes from and to, in the target's words."""
        if is_restore_drill(env, target):
            return "", restored_words(plan.point or "")
        if isinstance(env.targets[target], FullParams):
            return "", "its members in order: " + ", ".join(env.members(target))
        current, back, _ = drill_points(self.flows.planner, env, target)
        return (current.label if current is not None else "the live configuration"), back.label

    def settle(self, run: Run) -> Drill | None:
        """Record what the drill of a run that ended measured (nothing for other runs)."""
        drill = self.store.drills.get(run.id)
        if drill is None or run.state not in FINAL:
            return drill
        record_drill(self.store, run)
        log.info("%s: drill of %s settled: %s", run.incident_id, run.target, run.state)
        return self.store.drills.get(run.id)

    def settle_pending(self) -> int:
        """Settle the drills whose runs ended unseen (a crash between finish and record)."""
        settled = 0
        for drill in self.store.drills.find(states=("requested",)):
            run = self.store.runs.get(drill.run_id)
            if run is not None and run.state in FINAL:
                self.settle(run)
                settled += 1
        return settled

    def statuses(self, *, now: datetime | None = None) -> list[DrillStatus]:
        """Every target of every environment that allows drills, with its last drill."""
        self.settle_pending()
        now = now or self.store.clock()
        return [
            target_status(self.store, env_name, env, target, now=now)
            for env_name, env in self.config.environments.items()
            for target in env.targets
            if drill_allowed(env, env_name, target)
        ]

    def help_for(self, *, environment: str, target: str) -> str:
        """The modal's help line about the target's last drill."""
        return drill_help(self.statuses(), environment=environment, target=target)


class DrillRecorder:
    """A Progress that records a drill's measurements the moment its run ends; with the
    config, a scheduled target's drill that failed or took longer than its `rto` is
    flagged in its thread (`FLAGGED`, after the run's own report), and the target's trend
    is drawn there (`TREND_CHART`)."""

    def __init__(self, inner: Progress, store: Store, config: RollbackConfig | None = None) -> None:
        self.inner = inner
        self.store = store
        self.config = config

    def run_started(self, run: Run, *, resumed: bool) -> None:
        self.inner.run_started(run, resumed=resumed)

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        self.inner.step_started(run, step)

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None:
        self.inner.step_output(run, step, line)

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        self.inner.step_finished(run, step, record)

    def run_finished(self, run: Run) -> None:
        self._record(run)
        self.inner.run_finished(run)
        if self.config is not None and is_drill(run):
            flag_finished(self.store, self.config, run)
            self.store.outbox.enqueue(run.id, TREND_CHART)

    def run_expired(self, run: Run) -> None:
        self._record(run)
        self.inner.run_expired(run)

    def _record(self, run: Run) -> None:
        """Record a drill's end; a failure here is logged, `Drills.settle_pending` retries."""
        if not is_drill(run):
            return
        try:
            record_drill(self.store, run)
        except Exception:
            log.exception("%s: the drill's measurements were not recorded", run.incident_id)


TREND_CHART = "drill.trend"
"""Outbox message: upload the target's trend chart (its last drills' and real rollbacks'
times to recover, `bot.application.chart.trend_chart`) into the drill's thread, after the
run's own report (`handlers.drills.MESSAGES`)."""
FLAGGED = "drill.flagged"
"""Outbox message: a scheduled target's drill failed or was slower than its RTO
(`handlers.drills.MESSAGES` renders it in the drill's thread)."""


def flag_finished(store: Store, config: RollbackConfig, run: Run) -> list[str]:
    """Queue the flag of a scheduled target's finished drill, if any; return its reasons."""
    env = config.environments.get(run.environment)
    schedule = env.target_drills.get(run.target) if env is not None else None
    drill = store.drills.get(run.id)
    if schedule is None or drill is None:
        return []
    reasons = []
    if drill.state == "failed":
        reasons.append("failed")
    took = drill.recover_seconds
    if schedule.rto is not None and took is not None and took > schedule.rto.total_seconds():
        reasons.append("slower than the RTO")
    if reasons:
        rto = schedule.rto.total_seconds() if schedule.rto is not None else None
        detail = {"reasons": reasons, "recover_seconds": took, "rto_seconds": rto}
        store.outbox.enqueue(run.id, FLAGGED, detail)
    return reasons


def record_drill(store: Store, run: Run) -> None:
    """Settle the drill of `run` without the flows (for the runner's side)."""
    drill = store.drills.get(run.id)
    if drill is None:
        return
    plan = [StoredStep.from_json(raw) for raw in run.plan]
    measured = measure(plan, store.steps.of(run.id))
    verdict = drill.verdict or verdict_of(run)
    finished = run.state in ("succeeded", "failed")
    store.drills.settle(
        run.id,
        state=run.state,
        finished_at=run.finished_at or store.clock(),
        recover_seconds=measured.recover_seconds,
        forward_seconds=measured.forward_seconds,
        steps=measured.steps,
        targets=measured.targets,
        verdict=verdict,
        verdict_held=verdict_held(verdict, succeeded=run.state == "succeeded")
        if finished
        else None,
    )
