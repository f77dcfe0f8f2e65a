"""State transitions of a rollback run, and the two-person rule.

    requested -> approved -> running -> succeeded | failed
    requested -> rejected | expired | cancelled
    approved  -> cancelled
    failed    -> approved   (retry from the failed step: an approver's second decision)

Every method either makes exactly one transition (one transaction with its
audit event, in `bot.persistence.store`) or raises `Refused` with a sentence the person
who clicked can read. Nothing here knows Slack: the caller says who the user
is and which configured user groups they belong to.

Idempotence comes from the store: the same approver approving the same plan
twice hits the approvals table's unique key, and a Slack retry of the same
click is exactly that. Races come out as `Conflict`, after which we re-read
the run and answer from its new state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from bot.config import Environment, RollbackConfig
from bot.domain.decision import Answers, Severity, decide
from bot.domain.records import RunRecord
from bot.domain.states import RunKind, RunState
from bot.domain.versions import VersionNote
from bot.persistence.models import Incident, Run
from bot.persistence.store import Conflict, Lease, Store, TargetBusy

if TYPE_CHECKING:
    from bot.domain.plans import Plan

log = logging.getLogger(__name__)

BREAK_GLASS_PHRASE = "EMERGENCY"


UNANSWERED = "No recommendation: the flowchart's questions were not answered."
"""An incident's reason when nobody answered the flowchart (monitoring opened it): the
decision's own text would be a prompt ("Answer: …") that nobody on the card is asked."""


def plan_choices(run: Run) -> dict[str, bool]:
    """`Planner.build` keyword arguments for the choices the run was requested with."""
    return {
        "leave_maintenance_on_failure": run.leave_maintenance_on,
        "notify_customers": run.notify_customers,
    }


_ALLOWED: dict[RunState, tuple[RunState, ...]] = {
    RunState.APPROVED: (RunState.REQUESTED, RunState.FAILED),  # FAILED: retry (`retry`)
    RunState.REJECTED: (RunState.REQUESTED,),
    RunState.EXPIRED: (RunState.REQUESTED,),
    RunState.CANCELLED: (RunState.REQUESTED, RunState.APPROVED),
    RunState.RUNNING: (RunState.APPROVED, RunState.RUNNING),
    RunState.SUCCEEDED: (RunState.RUNNING,),
    RunState.FAILED: (RunState.APPROVED, RunState.RUNNING),
}


class Refused(Exception):
    """A request or click that changes nothing; the message says why."""


@dataclass(frozen=True)
class ApprovalOutcome:
    """What an approval click did."""

    run: Run
    approvals: int
    started: bool
    message: str


@dataclass
class Workflow:
    """Requests, approvals, rejections, expiry and the run's own transitions."""

    store: Store
    config: RollbackConfig

    # requesting ---------------------------------------------------------------

    def request(
        self,
        *,
        plan: Plan,
        requester: str,
        severity: Severity,
        answers: Answers,
        summary: str = "",
        source: str = "slack",
        detected_at: datetime | None = None,
        force: bool = False,
        break_glass: bool = False,
        confirmation: str | None = None,
        leave_maintenance_on: bool = False,
        notify_customers: bool = True,
        kind: RunKind = RunKind.ROLLBACK,
    ) -> tuple[Incident, Run]:
        """Open an incident and request its rollback; break-glass approves it at once."""
        env = self.config.environment(plan.environment)
        if break_glass:
            self._check_break_glass(env, plan.environment, confirmation)
        locks = self._locks(env, plan.target)
        holder = self.store.runs.lock_holder(environment=plan.environment, targets=locks)
        if holder is not None:
            raise TargetBusy(environment=plan.environment, target=plan.target, incident_id=holder)
        decision = decide(answers)
        incident = self.store.incidents.create(
            environment=plan.environment,
            target=plan.target,
            severity=severity.value,
            source=source,
            opened_by=requester,
            summary=summary,
            answers={k: v for k, v in vars(answers).items()},
            recommendation=decision.recommendation.value if decision.recommendation else None,
            reason=decision.reason if decision.recommendation else UNANSWERED,
            detected_at=detected_at or self.store.clock(),
        )
        try:
            run = self._create_run(
                incident,
                plan,
                env,
                requester=requester,
                force=force,
                break_glass=break_glass,
                kind=kind,
                leave_maintenance_on=leave_maintenance_on,
                notify_customers=notify_customers,
            )
        except TargetBusy:
            # Lost the race for the target after the pre-check: leave no record behind.
            self.store.incidents.discard(incident.id)
            raise
        if break_glass:
            run = self.store.runs.transition(
                run,
                to="approved",
                kind="run.break_glass",
                actor=requester,
                detail={"review_required": True, "confirmation": BREAK_GLASS_PHRASE},
                approved_at=self.store.clock(),
            )
        return incident, run

    def _create_run(
        self,
        incident: Incident,
        plan: Plan,
        env: Environment,
        *,
        requester: str,
        force: bool,
        break_glass: bool,
        kind: RunKind,
        leave_maintenance_on: bool,
        notify_customers: bool,
    ) -> Run:
        return self.store.runs.create(
            locks=self._locks(env, plan.target),
            actor=requester,
            incident_id=incident.id,
            environment=plan.environment,
            target=plan.target,
            point=plan.point,
            plan=plan.as_json(),
            plan_hash=plan.hash,
            requester=requester,
            approvals_required=env.approvals_required,
            expires_at=self.store.clock() + timedelta(minutes=env.approval_ttl_minutes),
            force=force,
            break_glass=break_glass,
            review_required=break_glass,
            notes=list(plan.notes),
            kind=kind,
            verdicts=tuple(plan.verdicts),
            leave_maintenance_on=leave_maintenance_on,
            notify_customers=notify_customers,
        )

    def _check_break_glass(self, env: Environment, env_name: str, confirmation: str | None) -> None:
        if not env.break_glass:
            raise Refused(f"break-glass is not allowed in {env_name}; ask an approver")
        if confirmation != BREAK_GLASS_PHRASE:
            raise Refused(f"break-glass needs the confirmation typed exactly: {BREAK_GLASS_PHRASE}")

    def _locks(self, env: Environment, target: str) -> list[str]:
        """Lock the target, and for a full-system rollback each of its members too."""
        return list(dict.fromkeys([target, *env.members(target)]))

    # approving ----------------------------------------------------------------

    def is_approver(self, env: Environment, user: str, user_groups: frozenset[str]) -> bool:
        """Return whether `user` is a configured approver, directly or through a group."""
        return user in env.approvers.users or bool(user_groups & set(env.approvers.groups))

    def approve(
        self,
        run_id: str,
        *,
        user: str,
        user_groups: frozenset[str] = frozenset(),
        current_plan_hash: str | None = None,
    ) -> ApprovalOutcome:
        """Count `user`'s approval; start the run when enough distinct approvers agreed."""
        for _ in range(10):
            run = self._run(run_id)
            env = self.config.environment(run.environment)
            self._check_approval(run, env, user=user, user_groups=user_groups)
            if current_plan_hash is not None and current_plan_hash != run.plan_hash:
                raise Refused(
                    "the plan changed since it was requested (a newer revision or backup "
                    "appeared); this approval would not be for what will run. "
                    "Cancel and request the rollback again."
                )
            since = self._approval_window_start(env)
            try:
                fresh, count = self.store.approvals.record(
                    run, approver=user, since=since, to_state="approved"
                )
            except IntegrityError:
                raise Refused("you already approved this rollback; nothing changed") from None
            except Conflict:
                continue
            started = fresh.state == "approved"
            need = fresh.approvals_required - count
            message = (
                "approved; the rollback starts now"
                if started
                else f"approval recorded; {need} more approver(s) needed"
            )
            return ApprovalOutcome(run=fresh, approvals=count, started=started, message=message)
        raise Refused("the rollback kept changing while approving; try again")

    def _check_approval(
        self, run: Run, env: Environment, *, user: str, user_groups: frozenset[str]
    ) -> None:
        if run.state != "requested":
            raise Refused(self._not_pending(run))
        if self.store.clock() >= run.expires_at:
            self._expire(run)
            raise Refused("this approval request has expired; request the rollback again")
        if user == run.requester:
            raise Refused("you requested this rollback; a second person must approve it")
        if not self.is_approver(env, user, user_groups):
            raise Refused(f"you are not an approver for {run.environment}")

    def _approval_window_start(self, env: Environment) -> datetime:
        return self.store.clock() - timedelta(minutes=env.approval_ttl_minutes)

    def _not_pending(self, run: Run) -> str:
        if run.state in ("approved", "running", "succeeded", "failed"):
            people = ", ".join(f"<@{a}>" for a, _ in self.approvals(run))
            who = people or ("by monitoring" if run.requester == "monitoring" else "break-glass")
            return f"this rollback was already approved ({who}); it is {run.state}"
        return f"this rollback is {run.state}; nothing to approve"

    def approvals(self, run: RunRecord) -> list[tuple[str, datetime]]:
        """Return the approvals that count for the run's plan."""
        env = self.config.environment(run.environment)
        since = (run.approved_at or self.store.clock()) - timedelta(
            minutes=env.approval_ttl_minutes
        )
        return self.store.approvals.of(run, since=since)

    # rejecting, cancelling, expiring ------------------------------------------

    def reject(
        self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset(), reason: str = ""
    ) -> Run:
        """Reject a requested run (an approver, not the requester)."""
        run = self._run(run_id)
        env = self.config.environment(run.environment)
        if run.state != "requested":
            raise Refused(self._not_pending(run))
        if not self.is_approver(env, user, user_groups) or user == run.requester:
            raise Refused(
                "only an approver other than the requester can reject; "
                "the requester can cancel instead"
            )
        return self._move(run, to="rejected", actor=user, detail={"reason": reason})

    def cancel(self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()) -> Run:
        """Cancel a run that has not started (the requester or an approver)."""
        run = self._run(run_id)
        env = self.config.environment(run.environment)
        if run.state not in _ALLOWED[RunState.CANCELLED]:
            raise Refused(f"this rollback is {run.state}; it can no longer be cancelled")
        if user != run.requester and not self.is_approver(env, user, user_groups):
            raise Refused("only the requester or an approver can cancel")
        return self._move(run, to="cancelled", actor=user)

    def retry(
        self,
        run_id: str,
        *,
        user: str,
        user_groups: frozenset[str],
        positions: list[int],
        detail: dict[str, Any],
    ) -> Run:
        """Approve a failed run again to re-run `positions` of its stored plan.

        The world changed since the first approval (a step failed part-way), so a retry is
        a second decision under the same two-person rule: an approver other than the
        requester; their click is that approval, recorded as `run.retry`.
        """
        run = self._run(run_id)
        env = self.config.environment(run.environment)
        if run.state != RunState.FAILED:
            raise Refused(f"this rollback is {run.state}; only a failed one can be retried")
        if user == run.requester:
            raise Refused("you requested this rollback; another approver must retry it")
        if not self.is_approver(env, user, user_groups):
            raise Refused(f"you are not an approver for {run.environment}")
        retries = run.retries + 1
        try:
            return self.store.runs.retry(
                run,
                actor=user,
                locks=self._locks(env, run.target),
                positions=positions,
                retries=retries,
                detail={**detail, "retry": retries},
            )
        except Conflict:
            fresh = self._run(run.id)
            raise Refused(f"the rollback changed meanwhile; it is now {fresh.state}") from None

    def withdraw(self, run_id: str, *, reason: str) -> Run:
        """Cancel a run the bot could not put before people (its thread failed to open)."""
        return self._move(self._run(run_id), to="cancelled", actor=None, detail={"reason": reason})

    def auto_approve(self, run_id: str, *, veto_window_ended: str) -> Run:
        """Approve a monitoring run as monitoring once its veto window has passed."""
        detail = {"veto_window_ended": veto_window_ended}
        return self._move(
            self._run(run_id),
            to="approved",
            actor="monitoring",
            kind="run.auto_approved",
            detail=detail,
            approved_at=self.store.clock(),
        )

    def approve_scheduled(self, run_id: str, *, slot: str) -> Run:
        """Approve a scheduled drill as the scheduler (its target's `drills:` schedule)."""
        return self._move(
            self._run(run_id),
            to="approved",
            actor="scheduler",
            kind="run.auto_approved",
            detail={"scheduled_for": slot},
            approved_at=self.store.clock(),
        )

    def expire_due(self) -> list[Run]:
        """Expire every requested run past its time-to-live."""
        expired = []
        for run in self.store.runs.due_for_expiry():
            try:
                expired.append(self._expire(run))
            except Conflict:
                continue
        return expired

    def _expire(self, run: Run) -> Run:
        return self.store.runs.transition(
            run, to="expired", kind="run.expired", actor=None, notify="run.expired"
        )

    # running (called by the runner) --------------------------------------------

    def start(
        self, run: Run, *, detail: dict[str, Any] | None = None, lease: Lease | None = None
    ) -> Run:
        """Mark the run running (first start, or `run.resumed` by another process after a crash).

        The runner passes its `lease`: the change is made only while it holds the run.
        """
        fields: dict[str, Any] = {}
        if run.started_at is None:
            fields["started_at"] = self.store.clock()
        kind = "run.started" if run.state == RunState.APPROVED else "run.resumed"
        return self._move(
            run,
            to=RunState.RUNNING,
            actor=None,
            kind=kind,
            detail=detail,
            notify=kind,
            lease=lease,
            **fields,
        )

    def finish(
        self,
        run: Run,
        *,
        ok: bool,
        outcome: str,
        needs_manual: bool = False,
        lease: Lease | None = None,
    ) -> Run:
        """Mark the run succeeded or failed, releasing the target (only while `lease` holds)."""
        to = RunState.SUCCEEDED if ok else RunState.FAILED
        return self._move(
            run,
            to=to,
            actor=None,
            detail={"outcome": outcome, "needs_manual": needs_manual},
            notify="run.finished",
            lease=lease,
            versions=version_note(run, ok=ok),
            outcome=outcome,
            needs_manual=needs_manual,
            finished_at=self.store.clock(),
        )

    # helpers ------------------------------------------------------------------

    def _run(self, run_id: str) -> Run:
        run = self.store.runs.get(run_id)
        if run is None:
            raise Refused(f"no rollback run {run_id}")
        return run

    def _move(
        self,
        run: Run,
        *,
        to: str,
        actor: str | None,
        kind: str | None = None,
        detail: dict[str, Any] | None = None,
        notify: str | None = None,
        lease: Lease | None = None,
        versions: VersionNote | None = None,
        **fields: Any,
    ) -> Run:
        if run.state not in _ALLOWED[RunState(to)]:
            raise Refused(f"a {run.state} rollback cannot become {to}")
        try:
            return self.store.runs.transition(
                run,
                to=to,
                kind=kind or f"run.{to}",
                actor=actor,
                detail=detail,
                notify=notify,
                lease=lease,
                versions=versions,
                **fields,
            )
        except Conflict:
            fresh = self._run(run.id)
            raise Refused(f"the rollback changed meanwhile; it is now {fresh.state}") from None


def version_note(run: Run, *, ok: bool) -> VersionNote | None:
    """What a finished run teaches about its target's versions.

    The version it moved away from is remembered as rolled away whatever the outcome:
    people judged it bad enough to approve leaving it. The version it went to is
    remembered as healthy only when the run succeeded, which means every verify step
    (rollout status, health polling, verification queries) passed.
    """
    away, to = run.from_key or "", run.to_key or ""
    if not away and not to:
        return None
    return VersionNote(
        environment=run.environment,
        target=run.target,
        incident_id=run.incident_id,
        healthy=(to, run.to_version or to) if ok and to else None,
        rolled_away=(away, run.from_version or away) if away and away != to else None,
    )
