"""Executes approved runs, step by step, durably.

A runner claims a run with a lease stored in the database, so several bot
processes sharing one PostgreSQL never execute the same plan twice. Each
step's start is recorded before it runs and its end, output and outcome
before the next one starts, and a heartbeat thread renews the lease while a
step is busy. When a process dies, its lease expires and another runner (or
the same one restarted) picks the run up: the step that was interrupted is
run again only if its action says it is safe to repeat; otherwise the run
stops as "manual intervention required" with the list of what is left.

After a failure only the steps marked `always` run (maintenance off, restart
workers), so the site is not left half-stopped by a failed rollback.

Before the first step the plan is rebuilt from the config and the live
systems and its hash compared with the approved one: an approval is for one
exact plan. On resume the world has moved (the rollback itself changed the
current revision), so there the rebuilt plan must only have the same steps by
name, and the stored descriptions stay the record of what was approved.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from actions.base import ActionError, PermanentError, StepContext, StepResult, TemporaryError
from bot.config import RollbackConfig
from bot.models import Run
from bot.plans import Plan, Planner
from bot.store import StepView, Store
from bot.workflow import Refused, Workflow

log = logging.getLogger(__name__)
DONE = ("succeeded", "skipped")


class Progress(Protocol):
    """What the runner reports as it goes; the Slack layer implements it."""

    def run_started(self, run: Run, *, resumed: bool) -> None: ...

    def step_started(self, run: Run, step: dict[str, Any]) -> None: ...

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None: ...

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None: ...

    def run_finished(self, run: Run) -> None: ...

    def run_expired(self, run: Run) -> None: ...


class NullProgress:
    """Report nothing."""

    def run_started(self, run: Run, *, resumed: bool) -> None:
        return None

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        return None

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None:
        return None

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        return None

    def run_finished(self, run: Run) -> None:
        return None

    def run_expired(self, run: Run) -> None:
        return None


class DurableMemory(MutableMapping[str, Any]):
    """A run's memory: every write is saved to the database before it returns."""

    def __init__(self, store: Store, run_id: str, initial: dict[str, Any]) -> None:
        self._store = store
        self._run_id = run_id
        self._data = dict(initial)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._store.set_run_fields(self._run_id, memory=dict(self._data))

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._store.set_run_fields(self._run_id, memory=dict(self._data))

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class Runner:
    """Claims approved runs and executes their plans."""

    store: Store
    workflow: Workflow
    config: RollbackConfig
    planner: Planner
    progress: Progress
    lease_seconds: float = 30.0
    owner: str = ""
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.owner:
            self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def run_pending(self) -> list[str]:
        """Expire stale requests, then execute every claimable run; return the ids run."""
        for expired in self.workflow.expire_due():
            self.progress.run_expired(expired)
        done = []
        for run_id in self.store.claimable():
            if self.execute(run_id):
                done.append(run_id)
        return done

    def serve(self, stop: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Run pending work until `stop` is set."""
        while not stop.is_set():
            try:
                self.run_pending()
            except Exception:
                log.exception("runner loop failed; retrying in %.0fs", poll_seconds)
            stop.wait(poll_seconds)

    def execute(self, run_id: str) -> bool:
        """Claim and execute one run; False if another runner holds it."""
        if not self.store.claim(run_id, owner=self.owner, seconds=self.lease_seconds):
            return False
        heartbeat = _Heartbeat(self.store, run_id, self.owner, self.lease_seconds)
        heartbeat.start()
        try:
            run = self.store.run(run_id)
            if run is not None and run.state in ("approved", "running"):
                self._execute(run)
        finally:
            heartbeat.stop()
            self.store.release(run_id, owner=self.owner)
        return True

    def _execute(self, run: Run) -> None:
        resumed = run.state == "running"
        plan = self._rebuild(run, resumed=resumed)
        if plan is None:
            return
        run = self.workflow.start(run)
        log.info("%s: run %s %s", run.incident_id, run.id, "resumed" if resumed else "started")
        self.progress.run_started(run, resumed=resumed)
        records = {r.position: r for r in self.store.steps(run.id)}
        memory = DurableMemory(self.store, run.id, run.memory)
        failure: str | None = None
        not_run: list[str] = []
        for planned, stored in zip(plan.steps, run.plan, strict=True):
            record = records.get(planned.position)
            if record is not None and record.state in DONE:
                continue
            if failure is not None and not planned.always:
                not_run.append(stored["description"])
                continue
            if record is not None and record.state == "running" and not planned.action.idempotent:
                failure = (
                    f"step {planned.position + 1} ({stored['name']}) was interrupted by a crash "
                    "and is not safe to repeat"
                )
                self._save(run, stored, state="failed", summary=failure)
                continue
            attempts = record.attempts if record is not None else 0
            error = self._run_step(run, planned.action, stored, memory, attempts=attempts)
            if error is not None and failure is None:
                failure = f"step {planned.position + 1} ({stored['name']}) failed: {error}"
        self._finish(run, failure=failure, not_run=not_run)

    def _rebuild(self, run: Run, *, resumed: bool) -> Plan | None:
        env = self.config.environments.get(run.environment)
        problem = None
        plan = None
        if env is None or run.target not in env.targets:
            problem = f"{run.target} in {run.environment} is no longer in the config file"
        else:
            try:
                plan = self.planner.build(
                    env_name=run.environment,
                    env=env,
                    target=run.target,
                    point=run.point,
                    force=run.force,
                    leave_maintenance_on_failure=bool(run.memory.get("leave_maintenance_on")),
                )
            except ActionError as exc:
                problem = f"the plan can no longer be built: {exc}"
            except Exception as exc:
                log.exception("%s: building the plan of run %s failed", run.incident_id, run.id)
                problem = f"the plan can no longer be built: {type(exc).__name__}: {exc}"
        if plan is not None and not resumed and plan.hash != run.plan_hash:
            problem = "the plan changed after it was approved; request the rollback again"
        if (
            plan is not None
            and resumed
            and [s.action.name for s in plan.steps] != [s["name"] for s in run.plan]
        ):
            problem = "the plan's steps changed while the run was interrupted"
        if problem is None:
            return plan
        run = self.workflow.start(run) if run.state == "approved" else run
        self._finish(run, failure=problem, not_run=[s["description"] for s in run.plan])
        return None

    def _run_step(
        self,
        run: Run,
        action: Any,
        stored: dict[str, Any],
        memory: DurableMemory,
        *,
        attempts: int,
    ) -> str | None:
        position = stored["position"]
        started = self.store.clock()
        self._save(run, stored, state="running", attempts=attempts + 1, started_at=started)
        self.progress.step_started(run, stored)
        ctx = StepContext(
            incident_id=run.incident_id,
            run_id=run.id,
            deadline=time.monotonic() + float(stored["timeout"]),
            memory=memory,
            emit=lambda line: self.progress.step_output(run, stored, line),
        )
        result, error = self._attempt(run, action, ctx)
        if error is None and result is not None:
            state = "skipped" if result.skipped else "succeeded"
            self._save(
                run,
                stored,
                state=state,
                summary=result.summary,
                output=result.output,
                data=result.data,
                finished_at=self.store.clock(),
            )
        else:
            self._save(
                run, stored, state="failed", summary=error or "", finished_at=self.store.clock()
            )
        record = next(r for r in self.store.steps(run.id) if r.position == position)
        self.progress.step_finished(run, stored, record)
        return error

    def _attempt(
        self, run: Run, action: Any, ctx: StepContext
    ) -> tuple[StepResult | None, str | None]:
        while True:
            try:
                return action.run(ctx), None
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

    def _save(self, run: Run, stored: dict[str, Any], *, state: str, **fields: Any) -> None:
        self.store.save_step(
            run,
            position=stored["position"],
            name=stored["name"],
            event_kind=f"step.{state}",
            state=state,
            **fields,
        )

    def _finish(self, run: Run, *, failure: str | None, not_run: list[str]) -> None:
        fresh = self.store.run(run.id)
        assert fresh is not None
        if failure is None:
            outcome = "rollback completed; all steps succeeded"
        else:
            left = "; ".join(not_run) if not_run else "nothing"
            outcome = f"{failure}. Manual intervention required. Not run: {left}"
        try:
            fresh = self.workflow.finish(
                fresh, ok=failure is None, outcome=outcome, needs_manual=failure is not None
            )
        except Refused:
            log.exception("%s: could not record the end of run %s", run.incident_id, run.id)
            return
        log.info("%s: run %s %s", run.incident_id, run.id, fresh.state)
        self.progress.run_finished(fresh)


class _Heartbeat:
    """Renews a run's lease in the background while it executes."""

    def __init__(self, store: Store, run_id: str, owner: str, seconds: float) -> None:
        self._store = store
        self._run_id = run_id
        self._owner = owner
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            if not self._store.renew(self._run_id, owner=self._owner, seconds=self._seconds):
                log.error("lost the lease on run %s", self._run_id)
                return
