"""The timed re-check after a successful rollback, scheduled durably, done once.

A rollback that succeeded can be undone minutes later by whatever else deploys
the workload: Argo CD or Flux once their sync is resumed too early, a person,
a CI pipeline. So `recheck_after` (on a Kubernetes target; 0 turns it off)
after a run succeeded, the bot reads each workload an undo step restored and
compares its pod template with the restored one (`actions.kubernetes.recheck`).

- Scheduling: the runner calls `schedule` just before it records the success
  (`bot.execution.runner`), one `rechecks` row per undo step with its due time. A crash
  between the two leaves the run running; whoever finishes it schedules again
  and the unique (run, position) keeps one row. A row whose run did not
  succeed after all is dropped when due.
- Doing: `run_due` claims due rows one by one (`Rechecks.claim_next`:
  fencing token, SKIP LOCKED on PostgreSQL), reads the cluster, and records the
  result with its event and its thread message in one transaction that holds
  only while the claim does: of several bot processes exactly one reports.
  A process that dies mid-check leaves the claim to run out; another checks
  again (a read is harmless) and reports. The runner's loop only `kick`s a
  background thread, so a slow API server never delays dispatching runs.
- The hold: a run that proposed its Git change and left sync suspended gets one more row
  per proposal (`git.hold`, due at once), which `bot.execution.hold` polls until Git
  names what runs, then resumes sync and watches one reconcile; the same claim, fencing
  and outbox rules, the row handed back with its next due time after each poll.
- Reporting: a changed template is an alert (`recheck.drift`: broadcast to the
  channel, requester and approvers mentioned, image from → to); an unchanged
  one is a quiet line in the thread (`recheck.steady`, "still runs X"). A
  workload that cannot be read is tried again a minute later, up to
  `ATTEMPTS` times, then said in the thread (`recheck.failed`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from actions.base import ActionError
from actions.kubernetes import KubernetesParams
from bot.config import RollbackConfig
from bot.domain.states import RecheckState, RunState
from bot.execution.hold import HOLD, NOTIFY, GitHold, due, hold_rows
from bot.execution.planner import Planner
from bot.persistence.models import Recheck, Run
from bot.persistence.store import Store

if TYPE_CHECKING:
    from actions.kubernetes.recheck import TemplateCheck

log = logging.getLogger(__name__)

RECHECKED = ("kubernetes.rollout_undo", "kubernetes.workload_undo")
ATTEMPTS = 5
RETRY_SECONDS = 60.0
CLAIM_SECONDS = 120.0


@runtime_checkable
class Rechecker(Protocol):
    """A target that can re-read what one of its undo steps restored."""

    def recheck(self, name: str, spec: dict[str, Any]) -> TemplateCheck: ...


@dataclass
class Rechecks:
    """Schedules re-checks when runs succeed and does the due ones, once across processes."""

    store: Store
    config: RollbackConfig
    planner: Planner
    owner: str = ""
    every: float = 5.0
    """Seconds between two passes started by `kick` (due times are minutes apart)."""
    _last: float | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.owner:
            self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def schedule(self, run: Run) -> int:
        """Add the re-checks of the run's undo steps whose target asks for one; return how many."""
        env = self.config.environments.get(run.environment)
        if env is None:
            return 0
        added = 0
        for position, source, spec in hold_rows(run):
            added += self.store.rechecks.schedule(
                run,
                position=position,
                source=source,
                step=HOLD,
                spec=spec,
                due_at=self.store.clock(),
            )
        for step in run.plan:
            source = step.get("source")
            params = env.targets.get(source) if isinstance(source, str) else None
            if step.get("name") not in RECHECKED or not isinstance(params, KubernetesParams):
                continue
            if params.recheck_after <= 0:
                continue
            added += self.store.rechecks.schedule(
                run,
                position=int(step["position"]),
                source=str(source),
                step=str(step["name"]),
                spec=dict(step.get("spec") or {}),
                due_at=self.store.clock() + timedelta(seconds=params.recheck_after),
            )
        return added

    def kick(self) -> None:
        """Do the due re-checks on a background thread, unless one is already at it.

        At most one pass every `every` seconds: the runner's loop calls this on each pass.
        """
        with self._lock:
            now = time.monotonic()
            if self._thread is not None and self._thread.is_alive():
                return
            if self._last is not None and now - self._last < self.every:
                return
            self._last = now
            self._thread = threading.Thread(target=self._logged, name="rechecks", daemon=True)
            self._thread.start()

    def _logged(self) -> None:
        try:
            self.run_due()
        except Exception:
            log.exception("re-checks failed; the next pass tries again")

    def run_due(self, *, limit: int = 50) -> int:
        """Claim and do due re-checks, one after another; return how many were settled."""
        settled = 0
        for _ in range(limit):
            recheck = self.store.rechecks.claim_next(owner=self.owner, seconds=CLAIM_SECONDS)
            if recheck is None:
                break
            settled += self._do(recheck)
        return settled

    def _do(self, recheck: Recheck) -> int:
        run = self.store.runs.get(recheck.run_id)
        if run is None or run.state != RunState.SUCCEEDED:
            state = run.state if run is not None else "gone"
            return self._settle(recheck, RecheckState.DROPPED, f"the run is {state}, not succeeded")
        if recheck.step == HOLD:
            return self._hold(recheck, run)
        target = self._target(run, recheck)
        if target is None:
            outcome = f"{recheck.source} in {run.environment} is no longer a Kubernetes target"
            return self._settle(recheck, RecheckState.DROPPED, outcome)
        try:
            found = target.recheck(recheck.step, dict(recheck.spec))
        except (ActionError, KeyError, ValueError) as exc:
            return self._not_read(recheck, run, f"{type(exc).__name__}: {exc}")
        detail = {
            "workload": found.workload,
            "restored": list(found.restored),
            "live": list(found.live),
        }
        kind = "recheck.drift" if found.changed else "recheck.steady"
        log.info("%s: re-check of %s: %s", run.incident_id, found.workload, found.detail)
        return self._settle(
            recheck,
            RecheckState.DONE,
            found.detail,
            changed=found.changed,
            notify=kind,
            detail=detail,
        )

    def _hold(self, recheck: Recheck, run: Run) -> int:
        """One poll of a hold; settled (1) only when the hold is over."""
        settle = GitHold(self.store, self.config, self.planner).poll(recheck, run)
        over = settle.state != RecheckState.PENDING
        self._settle(
            recheck,
            settle.state,
            settle.outcome,
            spec=settle.spec,
            due_at=due(self.store, settle),
            notify=NOTIFY if settle.said is not None else None,
            detail=settle.said,
            event=over or settle.said is not None,
        )
        return int(over)

    def _target(self, run: Run, recheck: Recheck) -> Rechecker | None:
        env = self.config.environments.get(run.environment)
        params = env.targets.get(recheck.source) if env is not None else None
        if not isinstance(params, KubernetesParams):
            return None
        target = self.planner.target(params)
        return target if isinstance(target, Rechecker) else None

    def _not_read(self, recheck: Recheck, run: Run, problem: str) -> int:
        if recheck.attempts < ATTEMPTS:
            log.warning("%s: re-check not done (%s); again in a minute", run.incident_id, problem)
            later = self.store.clock() + timedelta(seconds=RETRY_SECONDS)
            self._settle(recheck, RecheckState.PENDING, problem, due_at=later)
            return 0
        outcome = f"could not read the workload after {recheck.attempts} attempts: {problem}"
        return self._settle(recheck, RecheckState.FAILED, outcome, notify="recheck.failed")

    def _settle(self, recheck: Recheck, state: str, outcome: str, **kwargs: Any) -> int:
        if not self.store.rechecks.settle(recheck, state=state, outcome=outcome, **kwargs):
            log.warning("re-check %s was claimed by another process meanwhile", recheck.id)
            return 0
        return 1
