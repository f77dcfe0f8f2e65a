"""The use cases, one place each: open an incident, approve, reject, cancel, tick the checklist.

Slack handlers and monitoring both call these (dispatch's `flows`); neither
re-implements a rule. Each flow takes a typed request, goes through
`bot.execution.workflow` for every state transition, and returns a typed result or
raises `Refused` with a sentence for the person. What a flow needs from the
Slack side (post the incident thread, re-render it) is the `Thread` protocol,
implemented in `handlers`, so `bot` stays free of Slack.

Three rules live inside the flows rather than beside them:

- **An approval is for one exact plan.** `approve` rebuilds the plan from the
  live systems and hands its hash to the workflow, which refuses when it
  differs from the hash requested.
- **Once per request.** Slack retries a request it got no timely answer to,
  and a signed body can be replayed for five minutes. `receive(key)` records
  a key per request in the bot's database (the entry points choose it: the
  command's trigger id, the view id and hash, the message ts with action and
  user); a repeat is recognised by the key's primary key, changes nothing,
  and is told what the first one did (`settle`). A request that changed
  nothing is `release`d, so the same click can count later.
- **No orphans.** `open_incident` is one use case with a compensating path:
  when the Slack side cannot open the thread (the bot not in the channel,
  the channel gone, Slack failing after its retries, a dropped connection),
  the run is withdrawn with the reason, which frees the target lock, the
  incident is closed, and `ThreadNotOpened` tells the caller what a person
  should do next. A run never waits for approval without a thread to be
  approved in. (A break-glass run the runner picked up in the meantime is
  not stopped: it goes on, and the person is told how to follow it.)

After a failure, the decisions people make are `Flows.failures` (`bot.application.failures`).
`offer` lists a target's rollback points
with what the bot remembers of its versions (the last known healthy one is the default,
one rolled away from never is).

`open_from_alert` and `auto_approve_due` are monitoring's flows.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from actions.base import ActionError, RollbackPoint, running_point
from bot.application.failures import (
    MONITORING,
    Failures,
    run_or_refuse,
)
from bot.application.guard import Guard
from bot.application.requests import (
    CHANGED,
    NOTICE,
    IncidentRequest,
    Offer,
    Opened,
    Received,
    Thread,
    ThreadNotOpened,
)
from bot.application.resync import Resync
from bot.application.reviews import Reviews
from bot.application.verification import TICK, ticked_by
from bot.config import Environment, FullParams, RollbackConfig
from bot.domain.decision import Answers, Severity, decide, with_verdict
from bot.domain.plans import Plan, default_point, lasting, plan_difference, remembered
from bot.domain.states import RunKind
from bot.domain.verdict import Holders, blocked, holders_from
from bot.domain.versions import version_key
from bot.execution.planner import Planner
from bot.execution.planning import plan_for_run
from bot.execution.workflow import ApprovalOutcome, Refused, Workflow, plan_choices
from bot.persistence.models import Incident, Run
from bot.persistence.store import Store, TargetBusy

log = logging.getLogger(__name__)

CANCELLABLE = ("requested", "approved")


def _leaving(points: list[RollbackPoint], avoid: dict[str, str]) -> list[RollbackPoint]:
    """Mark each point an incident is rolling back from: offered, labelled, never the default."""
    leaving = {version_key(key): incident for key, incident in avoid.items()}
    marked = []
    for point in points:
        incident = leaving.get(version_key(point.key))
        if incident is None or point.avoid or point.is_current:
            marked.append(point)
            continue
        said = f"{incident} rolls back from this"
        marked.append(replace(point, label=f"{said} · {point.label}", avoid=said))
    return marked


THREADS_SEARCHED = 200
"""How many of the newest runs a thread's notice is matched against (their threads' ts)."""


@dataclass
class Flows:
    """The application layer: every use case of the bot."""

    store: Store
    workflow: Workflow
    config: RollbackConfig
    planner: Planner
    thread: Thread
    wake_runner: threading.Event = field(default_factory=threading.Event)
    wake_outbox: threading.Event = field(default_factory=threading.Event)
    """Set after queueing a message, so the outbox's sender delivers it without waiting."""
    failures: Failures = field(init=False)
    """The use cases of a failed run (retry, maintenance, resolve) and of re-arming."""
    reviews: Reviews = field(init=False)
    """The break-glass reviews: assigned when a run is requested, marked done by a person."""
    resync: Resync = field(init=False)
    """Resume sync: give a rolled-back workload back to its GitOps owners."""
    guard: Guard = field(init=False)
    """Versions marked bad after a rollback, and the deploy guard that keeps them out."""

    def __post_init__(self) -> None:
        self.failures = Failures(
            store=self.store,
            workflow=self.workflow,
            config=self.config,
            planner=self.planner,
            wake_runner=self.wake_runner,
            tell=self._tell,
        )
        self.reviews = Reviews(self.store, self.config, thread=self.thread)
        self.guard = Guard(config=self.config, workflow=self.workflow)
        self.resync = Resync(
            store=self.store, config=self.config, planner=self.planner, workflow=self.workflow
        )

    def notify_person(self, run_id: str | None, *, user: str, text: str) -> None:
        """Queue a direct message to `user` (about a run, or about none): delivered when
        Slack answers again."""
        self.store.outbox.enqueue(run_id, NOTICE, {"user": user, "text": text})
        self.wake_outbox.set()

    def run_of_thread(self, channel: str, thread_ts: str) -> str | None:
        """The run whose incident thread this is: a message of it the bot recorded, else the
        thread's parent (the incident card), looked for among the newest runs."""
        found = self.store.posts.run_of(channel=channel, ts=thread_ts)
        if found is not None:
            return found
        for run in self.store.runs.find(limit=THREADS_SEARCHED):
            if run.slack.get("channel") == channel and run.slack.get("thread_ts") == thread_ts:
                return run.id
        return None

    def _tell(self, run_id: str, kind: str) -> None:
        """Queue a redraw for the outbox (durable, after the click's ack) and wake its sender."""
        self.store.outbox.enqueue(run_id, kind)
        self.wake_outbox.set()

    # opening ------------------------------------------------------------------

    def open_incident(self, request: IncidentRequest) -> Opened:
        """Plan, request and open the thread; raise Refused, or ThreadNotOpened after undoing."""
        with self.planner.request():  # the plan and the versions from one read of the target
            incident, run = self._request(request)
        return self._open_thread(incident, run)

    def _request(
        self, request: IncidentRequest, *, auto_approve_at: datetime | None = None
    ) -> tuple[Incident, Run]:
        """Plan (reading the target), then record the whole request in one transaction.

        The incident, its run and locks, the break-glass approval and review, the versions,
        the verdicts' override and the ticked checks commit together: the runner, status and
        App Home never see a run whose request is half recorded (a break-glass run without
        its review, a monitoring run before its veto deadline).
        """
        env = self.config.environment(request.environment)
        notify = request.notify_customers
        if notify is None:
            notify = env.communications.notifies(request.severity.value)
        try:
            plan = self.planner.build(
                env_name=request.environment,
                env=env,
                target=request.target,
                point=request.point,
                force=request.force,
                holders=self._holders(request.environment, exclude=None),
                leave_maintenance_on_failure=request.leave_maintenance_on,
                notify_customers=notify,
            )
        except (ActionError, OSError) as exc:
            raise Refused(f"the plan could not be built: {exc}") from None
        versions = self._versions(request.environment, request.target, env, plan.point)
        try:
            with self.store.unit():
                incident, run = self.workflow.request(
                    plan=plan,
                    requester=request.requester,
                    severity=request.severity,
                    answers=request.answers,
                    summary=request.summary,
                    source=request.source,
                    detected_at=request.detected_at,
                    force=request.force,
                    break_glass=request.break_glass,
                    confirmation=request.confirmation,
                    leave_maintenance_on=request.leave_maintenance_on,
                    notify_customers=notify,
                    kind=RunKind.AUTOMATIC if request.requester == MONITORING else RunKind.ROLLBACK,
                )
                self.reviews.assign(run)  # break-glass: owned before shown
                if versions is not None:
                    self.store.runs.set_versions(run.id, **versions)
                if auto_approve_at is not None:
                    self.store.runs.set_auto_approve_at(run.id, auto_approve_at)
                self._record_verdicts(incident, run, plan)
                for item in sorted(request.ticked):
                    self.store.events.add(
                        incident_id=incident.id,
                        kind="prerollback.check",
                        actor=request.requester,
                        detail={"item": item},
                    )
                incident = self.store.incidents.get(incident.id) or incident
                run = self.store.runs.get(run.id) or run
        except TargetBusy as exc:
            raise Refused(str(exc)) from None
        return incident, run

    def _holders(self, environment: str, *, exclude: str | None) -> Holders:
        """Name the other incident holding a target of `environment`, for the verdict."""
        return holders_from(self.store.runs.lock_holder, environment, exclude=exclude)

    def _record_verdicts(self, incident: Incident, run: Run, plan: Plan) -> None:
        """Record a break-glass run over a blocked verdict as an override (the verdicts are kept
        with the run as it is requested); the card's recommendation says when fixing forward
        is the safer move."""
        reason = blocked(plan.verdicts)
        if reason is not None and run.break_glass:
            self.store.events.add(
                incident_id=incident.id,
                run_id=run.id,
                kind="verdict.overridden",
                actor=run.requester,
                detail={"verdict": reason, "plan_hash": run.plan_hash},
            )
        decided = decide(Answers(**incident.answers))
        if decided.recommendation is None:
            # The flowchart was not answered (monitoring opened the incident): the
            # incident's own reason stands, not a prompt for an answer nobody was asked.
            return
        advised = with_verdict(decided, plan.verdicts)
        if advised.reason != incident.reason:
            recommendation = advised.recommendation.value if advised.recommendation else None
            self.store.incidents.set_reason(
                incident.id, reason=advised.reason, recommendation=recommendation
            )

    def offer(
        self,
        environment: str,
        target: str,
        points: list[RollbackPoint] | None = None,
        *,
        avoid: dict[str, str] | None = None,
    ) -> Offer:
        """The target's points (listed now unless given) with what the bot remembers of them.

        `avoid`: versions (keys) an incident is rolling back from, with the incident, beyond
        those the bot recorded as rolled away: a re-plan never preselects the version its
        incident was opened to leave, even when no rollback of it ran yet.
        """
        env = self.config.environment(environment)
        listed = self.planner.points(env, target) if points is None else points
        known = self.store.versions.known(environment=environment, target=target)
        marked = remembered(listed, known)
        marked = _leaving(marked, avoid or {})
        return Offer(
            points=marked, default=default_point(marked, healthy=known.healthy_keys), known=known
        )

    def _versions(
        self, environment: str, target: str, env: Environment, ref: str | None
    ) -> dict[str, str] | None:
        """The from → to versions of a request, in the target's own words (point labels).

        People decide on versions, not refs (`2`, `previous`): the card, plan, Approve
        confirmation, progress, outcome, status, history and RCA all read these. They are
        taken when the plan is made; a target whose points cannot be listed gets none
        (None), and the messages fall back to the ref.
        """
        try:
            offer = self.offer(environment, target)
        except (ActionError, OSError) as exc:
            log.warning("%s/%s: versions not recorded: %s", environment, target, exc)
            return None
        points = offer.points
        current = running_point(points)
        chosen = next((p for p in points if p.ref == ref), None) if ref else None
        chosen = chosen or (None if ref else offer.default)
        versions: dict[str, str] = {
            "from_version": lasting(current) if current else "",
            "to_version": lasting(chosen) if chosen else (ref or ""),
        }
        if not isinstance(env.targets[target], FullParams):  # members keep their own
            versions["from_key"] = current.key if current else ""
            versions["to_key"] = chosen.key if chosen else ""
        return versions

    def open_requested(self, incident: Incident, run: Run) -> Opened:
        """Open the thread of a run requested elsewhere (a drill); undo it if Slack refuses."""
        return self._open_thread(incident, run)

    def _open_thread(self, incident: Incident, run: Run) -> Opened:
        try:
            opened = self.thread.open(incident, run)
        except ThreadNotOpened as exc:
            try:
                self._withdraw(incident, run, exc.reason)
            except Refused as late:  # a break-glass run the runner picked up meanwhile
                log.error("%s: thread not opened and not withdrawn: %s", incident.id, late)
                advice = (
                    f"The break-glass rollback had already started and goes on ({late}); "
                    f"follow it with `/rollback status {incident.id}`. {exc.advice}"
                )
                raise ThreadNotOpened(exc.reason, advice, withdrawn=False, run_id=run.id) from None
            exc.run_id = run.id
            raise
        if opened.state == "approved":
            self.wake_runner.set()
        return Opened(incident=incident, run=opened)

    def _withdraw(self, incident: Incident, run: Run, reason: str) -> None:
        self.workflow.withdraw(run.id, reason=f"the incident thread could not be opened: {reason}")
        log.error("%s: incident thread not opened, rollback withdrawn: %s", incident.id, reason)
        self.store.events.add(
            incident_id=incident.id,
            kind="incident.closed",
            actor=None,
            detail={"reason": f"the incident thread could not be opened: {reason}"},
        )
        self.store.incidents.resolve(incident.id, at=self.store.clock())

    def open_from_alert(
        self,
        *,
        environment: str,
        target: str,
        reason: str,
        detected_at: datetime | None = None,
        auto_approve: bool = True,
        received_at: datetime | None = None,
    ) -> Opened:
        """Open a Critical incident for an alert, once per busy target; arm auto-approval.

        `auto_approve=False` leaves the run for a person even where the
        environment rolls back automatically (monitoring's cool-down rule). The veto
        window counts from the alert's arrival (`received_at`, else now), not from the plan
        being recorded: the rollback starts `veto_seconds` after the bot was told, however
        long reading the target and planning took.
        """
        received = self.store.clock() if received_at is None else received_at
        env = self.config.environment(environment)
        self.config.target(environment, target)
        self._alert_on_holder(environment, target, reason)
        offer = self.offer(environment, target)
        point = offer.default
        if point is None:  # what runs is the last known healthy version: no automatic choice
            point = default_point(offer.points)
            auto_approve = False
        deadline = received + timedelta(seconds=env.veto_seconds)
        armed = deadline if env.auto_rollback and auto_approve else None
        try:
            incident, run = self._request(
                IncidentRequest(
                    environment=environment,
                    target=target,
                    requester=MONITORING,
                    severity=Severity.CRITICAL,
                    answers=Answers(functional=False),
                    point=point.ref if point else None,
                    summary=reason,
                    source=MONITORING,
                    detected_at=detected_at,
                ),
                auto_approve_at=armed,
            )
        except Refused:  # another process may have opened one meanwhile: record it there
            self._alert_on_holder(environment, target, reason)
            raise
        return self._open_thread(incident, run)

    def _alert_on_holder(self, environment: str, target: str, reason: str) -> None:
        """Record the alert on the incident holding the target, and refuse; else do nothing."""
        holder = self.store.runs.lock_holder(environment=environment, targets=[target])
        if holder is not None:
            self.store.events.add(
                incident_id=holder,
                kind="monitoring.alert",
                actor=MONITORING,
                detail={"reason": reason},
            )
            raise Refused(f"{target} in {environment} is already handled in {holder}")

    # deciding -----------------------------------------------------------------

    def approve(
        self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()
    ) -> ApprovalOutcome:
        """Count `user`'s approval of the exact plan requested; start the run when enough agree."""
        run = self._run(run_id)
        try:
            plan = self._current_plan(run) if run.state == "requested" else None
            current = plan.hash if plan is not None else None
            stale = run.plan_stale_at is not None
            if current is not None and current != run.plan_hash and not stale:
                self.store.runs.set_plan_stale_at(run.id, self.store.clock())
                self.thread.stale(run_id)
            elif current is not None and current == run.plan_hash and stale:
                self.store.runs.set_plan_stale_at(run.id, None)  # current again
            if plan is not None and current != run.plan_hash:
                changed = plan_difference(
                    steps=run.plan, notes=run.notes or [], verdicts=run.verdicts or (), now=plan
                )
                what = "; ".join(changed) or "its steps were reordered"
                raise Refused(
                    f"the plan changed since it was requested ({what}); "
                    "this approval would not be for what will run. Re-plan, or cancel and "
                    "request the rollback again."
                )
            reason = blocked(plan.verdicts) if plan is not None else None
            if reason is not None:
                raise Refused(
                    f"Approve is disabled: the rollback is {reason}. Fix what blocks it and "
                    "re-plan, or request it again with break-glass (recorded as an override)"
                )
            outcome = self.workflow.approve(
                run_id, user=user, user_groups=user_groups, current_plan_hash=current
            )
        except Refused:
            after = self.store.runs.get(run_id)
            if after is not None and after.state != run.state:
                self._tell(run_id, CHANGED)
            raise
        except (ActionError, OSError) as exc:
            raise Refused(
                f"the plan can no longer be built, so it cannot be approved: {exc}"
            ) from None
        self._tell(run_id, CHANGED)  # the card and plan are redrawn by the outbox
        if outcome.started:
            self.wake_runner.set()
        return outcome

    def _current_plan(self, run: Run) -> Plan:
        env = self.config.environment(run.environment)
        holders = self._holders(run.environment, exclude=run.incident_id)
        with self.planner.request():
            return plan_for_run(self.planner, run, env, holders=holders, **plan_choices(run))

    def auto_approve_due(self) -> list[Run]:
        """Approve, as monitoring, every monitoring run whose veto window has passed."""
        approved = []
        now = self.store.clock()
        for run in self.store.runs.due_for_auto_approval():
            due = run.auto_approve_at
            if run.requester != MONITORING or due is None or due > now:
                continue
            reason = blocked(run.verdicts or ())
            if reason is not None:
                self._withhold(run, reason)
                continue
            try:
                fresh = self.workflow.auto_approve(run.id, veto_window_ended=due.isoformat())
            except Refused:
                continue
            approved.append(fresh)
            self._tell(fresh.id, CHANGED)
            self.wake_runner.set()
        return approved

    def _withhold(self, run: Run, reason: str) -> None:
        """A blocked verdict stops monitoring's automatic approval; people decide (once)."""
        self.store.runs.set_auto_approve_at(run.id, None)
        self.store.events.add(
            incident_id=run.incident_id,
            run_id=run.id,
            kind="run.auto_approval_withheld",
            actor=MONITORING,
            detail={"verdict": reason},
        )
        self._tell(run.id, CHANGED)

    def replace_stale(self, run_id: str, *, user: str) -> None:
        """Withdraw a request whose plan went out of date, so it can be requested again."""
        run = self._run(run_id)
        if run.state != "requested" or run.plan_stale_at is None:
            return
        self.workflow.withdraw(run_id, reason=f"the plan went out of date; re-planned by {user}")
        self._tell(run_id, CHANGED)

    def reject(self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()) -> Run:
        """Reject a requested run (an approver other than the requester)."""
        run = self.workflow.reject(run_id, user=user, user_groups=user_groups)
        self._tell(run_id, CHANGED)  # redrawn by the outbox, after the click's ack
        return run

    def cancel(self, run_id: str, *, user: str, user_groups: frozenset[str] = frozenset()) -> Run:
        """Cancel a run that has not started (its requester or an approver)."""
        run = self.workflow.cancel(run_id, user=user, user_groups=user_groups)
        self._tell(run_id, CHANGED)
        return run

    def cancellable_run(self, incident_id: str) -> Run:
        """Return the incident's run that may still be cancelled, or raise Refused saying why."""
        if self.store.incidents.get(incident_id) is None:
            raise Refused(f"there is no incident {incident_id}")
        runs = self.store.runs.find(incident_id=incident_id)
        if not runs:
            raise Refused(f"{incident_id} has no rollback to cancel")
        waiting = [r for r in runs if r.state in CANCELLABLE]
        if not waiting:
            raise Refused(
                f"the rollback of {incident_id} is {runs[0].state}; it can no longer be cancelled"
            )
        return waiting[0]

    # after the run ------------------------------------------------------------

    def tick_checklist(
        self,
        run_id: str,
        *,
        user: str,
        selected: frozenset[str],
        shown: frozenset[str] | None = None,
        user_groups: frozenset[str] = frozenset(),
    ) -> int:
        """Record what this person ticked or unticked; return how many items changed.

        `selected` is the boxes on the person's copy of the message after the click and
        `shown` what that copy showed before it: their difference is what this person
        toggled. Only those items change, against the stored state, so a click on an
        older copy never undoes the ticks others made since. Without `shown` only new
        ticks count. Approvers, the requester and whoever approved may tick.
        """
        run = self._run(run_id)
        env = self.config.environment(run.environment)
        may = {run.requester, *(u for u, _ in self.workflow.approvals(run))}
        if user not in may and not self.workflow.is_approver(env, user, user_groups):
            raise Refused(
                "only the requester and the approvers of this environment tick its checklist"
            )
        before = set(ticked_by(self.store.events.of(run.incident_id)))
        toggled = selected ^ shown if shown is not None else selected - before
        changed = sorted(k for k in toggled if (k in selected) != (k in before))
        for key in changed:
            self.store.events.add(
                incident_id=run.incident_id,
                run_id=run.id,
                kind=TICK,
                actor=user,
                detail={"item": key, "checked": key in selected},
            )
        self.thread.post_checklist(run)
        return len(changed)

    # entry points: a request acted on once -----------------------------------

    def receive(self, key: str) -> Received:
        """Record that the request `key` arrived; say whether it is the first time."""
        if self.store.entries.receive(key):
            return Received(first=True)
        return Received(first=False, outcome=self.store.entries.outcome(key))

    def seen(self, key: str) -> Received | None:
        """Return how the request `key` was received before, or None if it never was."""
        if not self.store.entries.has(key):
            return None
        return Received(first=False, outcome=self.store.entries.outcome(key))

    def settle(self, key: str, outcome: str) -> None:
        """Record what the request `key` did, for its retries and replays to say."""
        self.store.entries.settle(key, outcome=outcome)

    def release(self, key: str) -> None:
        """Forget a request that changed nothing, so the same one may act later."""
        self.store.entries.release(key)

    def _run(self, run_id: str) -> Run:
        return run_or_refuse(self.store, run_id)
