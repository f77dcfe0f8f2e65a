"""Executes approved runs, step by step, durably.

A runner claims a run with a lease stored in the database, so several bot processes
sharing one PostgreSQL never execute the same plan twice. The lease is fenced
(`bot.persistence.store.Lease`): timed on the database's clock, a new token per claim,
and every write the runner makes about the run (step records, memory, transitions) holds
only while the token is current. Each step's start is recorded before it runs and its
end, output and outcome before the next one starts, and a heartbeat thread renews the
lease while a step is busy. A database error does not end the heartbeat: it retries, but
only until its renew deadline, a fixed part of the lease, has passed since the last
renewal; then the runner stops acting (the step's waits on `StepContext.ticker` raise
LeaseLost, no further step starts), well before another runner can take the lease, so
two runners are never inside one step: a child process the step started is killed with
its process group, and a step still inside a call that heeds neither makes the process
abandon, exiting before the lease can be taken (`bot.execution.leases`). A step's end is
kept in memory and its write retried, with backoff, while the lease still holds (a short
database outage does not turn a finished step into a crashed one); an end that could not
be written is kept by the runner, and written when the same runner claims the run again,
so its own living process never mistakes it for a crash. A runner whose lease is gone
stops at the next safe point (before a step, between retries, or when its next write is
refused), says so in the thread, and writes nothing more.

When a process dies, its lease expires and another runner (or
the same one restarted) picks the run up: the step that was interrupted is
run again only if its action says it is safe to repeat; otherwise it is
marked `interrupted` and the run stops for a person.

The runner never talks to Slack: each state change queues its message in the
outbox in the same transaction (`bot.execution.outbox`), and `Progress`
(`bot.execution.progress`) only nudges.

Before the first step the plan is rebuilt from the config and the live
systems and its hash compared with the approved one: an approval is for one
exact plan. On resume the world has moved (the rollback itself changed the
current revision), so the runner does not plan again: it rebuilds the stored,
approved steps from their specs (`Planner.restore`), and each action tells
"already done" from "not started" from "half done" itself.

A failed run that an approver retried (`bot.domain.aftermath`) is approved again with its
retried steps' records dropped; it too runs the stored steps, never a new plan.

Once anything went wrong (a step failed, an interrupted step is not safe to
repeat, a step cannot be rebuilt any more), only the steps marked `always`
run (maintenance off, restart workers), on every path once the step they undo
began, so a failed rollback does not also leave the site in maintenance with
its workers stopped, and a run stopped before maintenance went on does not
switch off a maintenance someone else turned on. The
outcome then says what ran, what did not, and what state production is in
(`bot.execution.outcome`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actions import voice
from actions.base import (
    Action,
    ActionError,
    PermanentError,
    StepContext,
    StepResult,
    TemporaryError,
)
from actions.clock import SYSTEM, Ticker
from bot.config import RollbackConfig
from bot.domain.plans import RestoredStep, StoredStep
from bot.domain.records import RunRecord
from bot.domain.states import EXECUTABLE_STATES, RunState, StepState
from bot.domain.verdict import holders_from
from bot.execution.leases import Fenced, HandOver, Heartbeat, Hold, Watchdog, abandon_process
from bot.execution.memory import DurableMemory
from bot.execution.outcome import (
    FINISHED,
    describe_outcome,
    earlier_failure,
    running_now,
    unopened,
)
from bot.execution.planner import Planner
from bot.execution.planning import plan_for_run, restore_for_run
from bot.execution.progress import Progress
from bot.execution.recheck import Rechecks
from bot.execution.workflow import Refused, Workflow, plan_choices
from bot.persistence.models import Run
from bot.persistence.store import Lease, LeaseLost, StepView, Store

log = logging.getLogger(__name__)


@dataclass
class Runner:
    """Claims approved runs and executes their plans."""

    store: Store
    workflow: Workflow
    config: RollbackConfig
    planner: Planner
    progress: Progress
    lease_seconds: float = 30.0
    renew_seconds: float = 0.0
    """How long the heartbeat retries a failing renewal before the runner stops acting
    (0: two thirds of `lease_seconds`); shorter than the lease, as client-go's leader
    election requires (tools/leaderelection/leaderelection.go, NewLeaderElector:
    "leaseDuration must be greater than renewDeadline", defaults 15 s and 10 s)."""
    owner: str = ""
    sleep: Callable[[float], None] = time.sleep
    ticker: Ticker = SYSTEM
    """The clock step deadlines are on (`StepContext.ticker`); tests move a fake one."""
    workers: int = 4
    """How many runs this process executes at once (`dispatch`)."""
    abandon: Callable[[str], None] = abandon_process
    """What a step still inside its call near the lease's end does (`bot.execution.leases`):
    log and exit the process; tests record instead."""
    rechecks: Rechecks | None = None
    """Re-checks after success (`bot.execution.recheck`): scheduled by `_finish`, done from
    `sweep`."""
    _pool: dict[str, threading.Thread] = field(default_factory=dict, init=False, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _unwritten: dict[tuple[str, int], dict[str, Any]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Step ends this runner saw but could not write before its lease ran out, by (run,
    position): written when it claims the run again, instead of calling the step crashed."""

    def __post_init__(self) -> None:
        if not self.owner:
            self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        if not self.renew_seconds:
            self.renew_seconds = self.lease_seconds * 2 / 3
        if self.renew_seconds >= self.lease_seconds:
            raise ValueError("the renew deadline must be shorter than the lease")

    def sweep(self) -> list[Run]:
        """Expire requests past their time-to-live (never waits on a running step)."""
        expired = self.workflow.expire_due()
        for run in expired:
            self.progress.run_expired(run)
        if self.rechecks is not None:
            self.rechecks.kick()  # on its own thread: a slow cluster never delays dispatch
        return expired

    def run_pending(self) -> list[str]:
        """Expire stale requests, then execute every claimable run here, one after another.

        For tools and tests; the bot process uses `dispatch`, which runs them in parallel.
        """
        self.sweep()
        done = []
        for run_id in self.store.leases.claimable():
            if self.execute(run_id):
                done.append(run_id)
        return done

    def dispatch(self) -> list[str]:
        """Claim runs into the bounded pool, each on a thread of its own; return the new ids.

        Returns at once: the caller's loop (expiry, monitoring) never waits on a step.
        Runs of different targets progress in parallel; the target locks taken when a
        rollback is requested keep it to one run per target.
        """
        started: list[str] = []
        if self._stopping.is_set():
            return started
        with self._pool_lock:
            self._pool = {i: t for i, t in self._pool.items() if t.is_alive()}
            while len(self._pool) < self.workers:
                sent = time.monotonic()
                lease = self.store.leases.claim_next(
                    owner=self.owner, seconds=self.lease_seconds, skip=set(self._pool)
                )
                if lease is None:
                    break
                thread = threading.Thread(
                    target=self._hold_logged,
                    args=(lease, sent),
                    name=f"run-{lease.run_id}",
                    daemon=True,
                )
                self._pool[lease.run_id] = thread
                thread.start()
                started.append(lease.run_id)
        return started

    def busy(self) -> list[str]:
        """Ids of the runs executing in this runner's pool now."""
        with self._pool_lock:
            return [i for i, t in self._pool.items() if t.is_alive()]

    def serve(self, stop: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Expire and dispatch until `stop` is set."""
        while not stop.is_set():
            try:
                self.sweep()
                self.dispatch()
            except Exception:
                log.exception("runner loop failed; retrying in %.0fs", poll_seconds)
            stop.wait(poll_seconds)

    def execute(self, run_id: str) -> bool:
        """Claim and execute one run on this thread; False if another runner holds it."""
        sent = time.monotonic()
        lease = self.store.leases.claim(run_id, owner=self.owner, seconds=self.lease_seconds)
        if lease is None:
            return False
        self._hold(lease, sent)
        return True

    def _hold_logged(self, lease: Lease, sent: float) -> None:
        try:
            self._hold(lease, sent)
        except Exception:
            log.exception("run %s stopped unexpectedly; its lease runs out", lease.run_id)

    def _hold(self, lease: Lease, sent: float) -> None:
        """Execute the run `lease` holds, renewing it meanwhile; stop if it is lost.

        `sent` is when the claim was sent (monotonic): the lease's times count from there,
        never later than the database's own."""
        heartbeat = Heartbeat(
            self.store,
            lease,
            seconds=self.lease_seconds,
            renew_seconds=self.renew_seconds,
            claimed=sent,
        )
        heartbeat.start()
        hold = Hold(lease, heartbeat, self._stopping)
        watchdog = Watchdog(hold, abandon=self.abandon)
        watchdog.start()
        try:
            run = self.store.runs.get(lease.run_id)
            if run is not None and run.state in EXECUTABLE_STATES:
                self._execute(run, hold, previous_owner=lease.previous_owner)
        except LeaseLost:
            self._lost(lease)
        except HandOver:
            self._handed_over(lease)
        finally:
            watchdog.stop()
            heartbeat.stop()
            try:
                self.store.leases.release(lease)
            except Exception as exc:  # the database is still away: the lease runs out by itself
                log.warning("could not release the lease on run %s: %s", lease.run_id, exc)

    def _handed_over(self, lease: Lease) -> None:
        log.warning("%s stopping: run %s handed over between steps", lease.owner, lease.run_id)
        run = self.store.runs.get(lease.run_id)
        if run is not None:
            detail = {"owner": lease.owner}
            self.store.events.add(
                incident_id=run.incident_id, run_id=run.id, kind="run.handed_over", detail=detail
            )

    def request_stop(self) -> None:
        """Stop claiming; each running run stops at its next step boundary, lease released.

        The runs stay `running` with no holder, so another process (or this one,
        restarted) resumes them at once, from the approved plan. For SIGTERM.
        """
        self._stopping.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for this runner's pool to finish; True if it did."""
        deadline = time.monotonic() + timeout
        for thread in list(self._pool.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.busy()

    def _lost(self, lease: Lease) -> None:
        """Say that this runner lost the run and stopped; its successor carries on."""
        log.error("%s lost its lease on run %s; stopped", lease.owner, lease.run_id)
        try:
            run = self.store.runs.get(lease.run_id)
            if run is None:
                return
            detail = {"owner": lease.owner, "generation": lease.generation}
            self.store.events.add(
                incident_id=run.incident_id, run_id=run.id, kind="run.lease_lost", detail=detail
            )
            self.store.outbox.enqueue(run.id, "run.lease_lost", detail)
        except Exception as exc:  # cut off from the database: the lease says it for us
            log.error("could not record losing run %s: %s", lease.run_id, exc)

    def _execute(self, run: Run, hold: Hold, *, previous_owner: str | None = None) -> None:
        resumed = run.state == RunState.RUNNING
        # a retry from the failed step (`bot.domain.aftermath`) runs the stored plan, as a
        # resume does
        retried = run.state == RunState.APPROVED and bool(run.retries)
        steps = self._resume_plan(run) if resumed or retried else self._first_plan(run, hold)
        if steps is None:
            return
        detail: dict[str, Any] | None = (
            {"by": self.owner, "previous_owner": previous_owner} if resumed else None
        )
        if retried:
            detail = {"retry": run.retries}
        run = self.workflow.start(run, detail=detail, lease=hold.lease)
        log.info("%s: run %s %s", run.incident_id, run.id, "resumed" if resumed else "started")
        self.progress.run_started(run, resumed=resumed)
        records = {r.position: r for r in self.store.steps.of(run.id)}
        memory = DurableMemory(self.store, run.id, run.memory, lease=hold.lease)
        failure = earlier_failure(steps, records)
        begun = {p for p, r in records.items() if r.state != StepState.NOT_RUN}
        for step in steps:
            hold.check_boundary()
            stored = step.stored
            record = records.get(stored.position)
            settled, failure = self._settled(
                run, hold, step, record, failure=failure, steps=steps, begun=begun
            )
            if settled or step.action is None:
                continue
            attempts = record.attempts if record is not None else 0
            begun.add(stored.position)
            error = self._run_step(run, hold, step.action, stored, memory, attempts=attempts)
            if error is not None and failure is None:
                failure = f"{stored.label} failed: {error}"
        hold.check()
        self._finish(run, hold, failure=failure, steps=[s.stored for s in steps])

    def _settled(
        self,
        run: Run,
        hold: Hold,
        step: RestoredStep,
        record: StepView | None,
        *,
        failure: str | None,
        steps: list[RestoredStep],
        begun: set[int],
    ) -> tuple[bool, str | None]:
        """Whether the step is settled without running it now (finished already, skipped
        after a failure, its end known or its interruption recorded); the run's failure."""
        stored = step.stored
        if record is not None and record.state in FINISHED:
            return True, failure
        if failure is not None and not stored.always:
            return True, failure
        opener = unopened(stored, [s.stored for s in steps], begun) if failure else None
        if opener is not None:
            summary = f"not needed: {opener.words or opener.name} never ran"
            self._save(run, hold, stored, state=StepState.NOT_RUN, summary=summary)
            return True, failure
        running = record is not None and record.state == StepState.RUNNING
        end = self._unwritten.pop((run.id, stored.position), None)
        if running and end is not None:
            # this process saw the step end but could not write it: no crash, no repeat
            self._save_end(run, hold, stored, end)
            if end["state"] == StepState.FAILED and failure is None:
                failure = f"{stored.label} failed: {end['summary']}"
            return True, failure
        if running and not stored.idempotent:
            problem = (
                f"{stored.label} was interrupted by a crash and is not safe to repeat; "
                "check by hand whether it took effect"
            )
            self._save(run, hold, stored, state=StepState.INTERRUPTED, summary=problem)
            return True, failure or problem
        if step.action is None:
            state = StepState.INTERRUPTED if running else StepState.NOT_RUN
            self._save(run, hold, stored, state=state, summary=step.problem)
            return True, failure or step.problem
        return False, failure

    def _first_plan(self, run: Run, hold: Hold) -> list[RestoredStep] | None:
        """Build the plan from the live systems and hold it to the approved hash."""
        env = self.config.environments.get(run.environment)
        problem = None
        plan = None
        if env is None or run.target not in env.targets:
            problem = f"{run.target} in {run.environment} is no longer in the config file"
        else:
            try:
                plan = plan_for_run(
                    self.planner,
                    run,
                    env,
                    holders=holders_from(
                        self.store.runs.lock_holder, run.environment, exclude=run.incident_id
                    ),
                    **plan_choices(run),
                )
            except ActionError as exc:
                problem = f"the plan can no longer be built: {exc}"
            except Exception as exc:
                log.exception("%s: building the plan of run %s failed", run.incident_id, run.id)
                problem = f"the plan can no longer be built: {type(exc).__name__}: {exc}"
        if plan is not None and plan.hash != run.plan_hash:
            problem = "the plan changed after it was approved; request the rollback again"
        if problem is not None or plan is None:
            run = self.workflow.start(run, lease=hold.lease)
            self._finish(run, hold, failure=problem, steps=stored_steps(run), nothing_ran=True)
            return None
        return [RestoredStep(p.stored(), p.action) for p in plan.steps]

    def _resume_plan(self, run: Run) -> list[RestoredStep]:
        """Rebuild the approved plan from the stored steps, never from the live systems."""
        stored = stored_steps(run)
        env = self.config.environments.get(run.environment)
        if env is None or run.target not in env.targets:
            problem = f"{run.target} in {run.environment} is no longer in the config file"
            return [
                RestoredStep(s, None, f"{s.label} could not be rebuilt: {problem}") for s in stored
            ]
        return restore_for_run(self.planner, run, env, stored)

    def _run_step(
        self,
        run: Run,
        hold: Hold,
        action: Action,
        stored: StoredStep,
        memory: DurableMemory,
        *,
        attempts: int,
    ) -> str | None:
        step = stored.as_json()
        self._save(
            run,
            hold,
            stored,
            state=StepState.RUNNING,
            attempts=attempts + 1,
            started_at=self.store.clock(),
        )
        self.progress.step_started(run, step)
        ctx = StepContext(
            incident_id=run.incident_id,
            run_id=run.id,
            deadline=self.ticker.monotonic() + stored.timeout,
            memory=memory,
            emit=lambda line: self.progress.step_output(run, step, line),
            ticker=Fenced(self.ticker, hold),
        )
        result, error = self._attempt(run, hold, action, ctx)
        end: dict[str, Any]
        if error is None and result is not None:
            end = {
                "state": StepState.SKIPPED if result.skipped else StepState.SUCCEEDED,
                "summary": result.summary,
                "output": result.output,
                "data": result.data,
            }
        else:
            end = {"state": StepState.FAILED, "summary": error or ""}
        self._save_end(run, hold, stored, {**end, "finished_at": self.store.clock()})
        record = next(r for r in self.store.steps.of(run.id) if r.position == stored.position)
        self.progress.step_finished(run, step, record)
        return error

    def _attempt(
        self, run: Run, hold: Hold, action: Action, ctx: StepContext
    ) -> tuple[StepResult | None, str | None]:
        while True:
            hold.check()
            try:
                with (
                    hold.inside(f"{run.incident_id}: run {run.id}: step {action.name}"),
                    voice.speaking_to(ctx.emit),
                ):
                    return action.run(ctx), None
            except LeaseLost:
                raise
            except TemporaryError as exc:
                if ctx.remaining() <= exc.delay:
                    return None, f"{exc} (gave up: step deadline reached)"
                log.info(
                    "%s: %s: temporary: %s; retry in %.1fs",
                    run.incident_id,
                    action.name,
                    exc,
                    exc.delay,
                )
                ctx.emit(f"temporary problem: {exc}; retrying in {exc.delay:.0f}s")
                self.sleep(exc.delay)
            except PermanentError as exc:
                return None, str(exc)
            except Exception as exc:
                log.exception("%s: %s raised unexpectedly", run.incident_id, action.name)
                return None, f"unexpected error: {type(exc).__name__}: {exc}"

    def _save_end(self, run: Run, hold: Hold, stored: StoredStep, end: dict[str, Any]) -> None:
        """Write a step's end, retrying through a database outage while the lease holds.

        The write is fenced, so it is safe until the very end of the lease; once the lease
        would have run out the end is kept (`_unwritten`) and LeaseLost raised.
        """
        delay = 0.05
        while True:
            try:
                self._save(run, hold, stored, **end)
                return
            except LeaseLost:
                raise
            except Exception as exc:
                if hold.heartbeat.remaining() <= delay:
                    self._unwritten[(run.id, stored.position)] = end
                    log.error(
                        "%s: the end of %s could not be written before the lease ran out: %s",
                        run.incident_id,
                        stored.label,
                        exc,
                    )
                    raise LeaseLost(hold.lease) from exc
                log.warning(
                    "%s: writing the end of %s failed (%s); retrying in %.2fs",
                    run.incident_id,
                    stored.label,
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self.lease_seconds / 10)

    def _save(self, run: Run, hold: Hold, stored: StoredStep, *, state: str, **fields: Any) -> None:
        self.store.steps.save(
            run,
            lease=hold.lease,
            position=stored.position,
            name=stored.name,
            phase=stored.phase,
            event_kind=f"step.{state.replace(' ', '_')}",
            notify="step.started" if state == StepState.RUNNING else "step.finished",
            state=state,
            **fields,
        )

    def _finish(
        self,
        run: Run,
        hold: Hold,
        *,
        failure: str | None,
        steps: list[StoredStep],
        nothing_ran: bool = False,
    ) -> None:
        fresh = self.store.runs.get(run.id)
        assert fresh is not None
        records = {} if nothing_ran else {r.position: r for r in self.store.steps.of(run.id)}
        live = running_now(self.planner, self.config, fresh) if failure is not None else ""
        outcome = describe_outcome(steps, records, failure=failure, live=live)
        if failure is None and self.rechecks is not None:
            self.rechecks.schedule(fresh)  # before the success is recorded: a crash keeps it
        try:
            fresh = self.workflow.finish(
                fresh,
                ok=failure is None,
                outcome=outcome,
                needs_manual=failure is not None,
                lease=hold.lease,
            )
        except Refused:
            log.exception("%s: could not record the end of run %s", run.incident_id, run.id)
            return
        log.info("%s: run %s %s", run.incident_id, run.id, fresh.state)
        self.progress.run_finished(fresh)


def stored_steps(run: RunRecord) -> list[StoredStep]:
    """The run's approved steps, typed."""
    return [StoredStep.from_json(raw) for raw in run.plan]
