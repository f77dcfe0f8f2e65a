"""Scheduled drills: the bot starts each target's drill itself, on the target's schedule.

    targets:
      db:
        kind: database
        drills: {every: 7d, at: "Tue 10:00", rto: 15m}

A target's drill is due at the schedule's latest slot (`at`, UTC: a weekday and a time,
or a time every day) when no drill of it started since, and the one before started at
least `every` before the slot (less `SLACK`: a drill that began a few minutes after last
week's slot still counts as last week's). The runner loop calls `start_due` on each pass:

- a target an incident holds is skipped (nothing is opened; it becomes overdue if the
  incident lasts); a drill that cannot be planned or opened is tried again after `RETRY`;
- a drill is requested like any other (`Drills.open`: the same plan, thread and record),
  which claims the target, so one drill runs at a time per target, however many replicas
  tick at once; another request refused as busy is simply skipped;
- it is approved by the scheduler (`Workflow.approve_scheduled`, an audit event naming the
  slot), so the runner picks it up as it picks up any approved run.

What a drill found is flagged where drills are shown (`DrillStatus.flags`): a failed one, a
time to recover over the schedule's `rto`, or none within `every`. A failed or slow drill is
also said in its thread (`drills.FLAGGED`). An overdue one is said in the environment's
incident channel, once per period of `every` (`tell_overdue`, on the same pass): a scheduled
target is overdue `every` after its last successful drill ended (after its first drill
started, when none succeeded), while no drill of it is requested or running. The message
goes through the outbox on the target's newest drill run (an outbox row belongs to a run);
the delivered messages of the period on its recent drill runs say it was told, so a restart
or a second replica does not tell it again. A scheduled drill that cannot even be started
(refused at planning: no backup, a check that fails) is said in the same channel with the
reason, once per slot (`NOT_STARTED`, an outbox message of no run), so a target that was
never drilled because its drill cannot start is not only a line in the listing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.application.drills import Drills
from bot.application.requests import CHANGED, ThreadNotOpened
from bot.config import DrillSchedule
from bot.execution.workflow import Refused
from bot.persistence.models import Drill, Run

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"
"""The requester and approver of a scheduled drill."""
SLACK = timedelta(hours=12)
RETRY = timedelta(minutes=10)
"""How soon a drill that could not be started (no backup, Slack down) is tried again: the
runner loop ticks every few seconds, and planning reads the backups."""
COUNTED = ("requested", "approved", "running", "succeeded", "failed")
"""Drill states that count as the slot's drill (rejected, expired, cancelled did not run)."""
IN_FLIGHT = ("requested", "approved", "running")
OVERDUE = "drill.overdue"
"""Outbox message: a scheduled target had no successful drill within `every`
(`handlers.drills.MESSAGES` says it in the environment's incident channel)."""
NOT_STARTED = "drill.not_started"
"""Outbox message of no run: a scheduled drill could not start at its slot, and why
(`handlers.drills.ALONE` says it in the environment's incident channel)."""
LOOKED_BACK = 8
"""How many of a target's newest drill runs are searched for this period's message."""


def last_slot(schedule: DrillSchedule, now: datetime) -> datetime:
    """The schedule's latest slot at or before `now` (UTC)."""
    hour, minute = schedule.time
    slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if schedule.weekday is not None:
        slot -= timedelta(days=(slot.weekday() - schedule.weekday) % 7)
        if slot > now:
            slot -= timedelta(days=7)
    elif slot > now:
        slot -= timedelta(days=1)
    return slot


def is_due(schedule: DrillSchedule, *, now: datetime, last_started: datetime | None) -> bool:
    """Whether a drill is due now, given when the target's last drill started."""
    if last_started is None:
        return True
    slot = last_slot(schedule, now)
    return last_started < slot and slot - last_started >= schedule.every - SLACK


def overdue_period(
    drills: list[Drill], schedule: DrillSchedule, *, now: datetime
) -> datetime | None:
    """When the current period of being overdue began, or None when the target is not
    overdue (`drills`: the target's, newest first; a drill in flight is not overdue yet)."""
    if not drills or any(d.state in IN_FLIGHT for d in drills):
        return None
    recovered = next(
        (d for d in drills if d.state == "succeeded" and d.recover_seconds is not None), None
    )
    if recovered is not None:
        since = (recovered.finished_at or recovered.created_at) + schedule.every
    else:
        since = drills[-1].created_at + schedule.every
    if now <= since:
        return None
    return since + schedule.every * ((now - since) // schedule.every)


def overdue_detail(
    environment: str, target: str, drills: list[Drill], schedule: DrillSchedule, period: datetime
) -> dict[str, object]:
    """What the overdue message says (`handlers.drill_blocks.overdue_text`)."""
    recovered = next(
        (d for d in drills if d.state == "succeeded" and d.recover_seconds is not None), None
    )
    last = drills[0]
    return {
        "environment": environment,
        "target": target,
        "period": period.isoformat(),
        "every_seconds": schedule.every.total_seconds(),
        "recovered_at": (recovered.finished_at or recovered.created_at).isoformat()
        if recovered is not None
        else None,
        "first_at": drills[-1].created_at.isoformat(),
        "last_state": last.state,
        "last_at": (last.finished_at or last.created_at).isoformat(),
    }


@dataclass
class DrillSchedules:
    """Start the drills that are due, approved by the scheduler."""

    drills: Drills
    _tried: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _told: set[tuple[str, str, str]] = field(default_factory=set)
    """(environment, target, period) this process queued or found told: not looked up again."""

    def due(self, now: datetime) -> list[tuple[str, str, DrillSchedule]]:
        """The (environment, target, schedule) whose drill is due at `now`."""
        store = self.drills.store
        out = []
        for env_name, env in self.drills.config.environments.items():
            for target, schedule in env.target_drills.items():
                started = store.drills.find(
                    environment=env_name, target=target, states=COUNTED, limit=1
                )
                last = started[0].created_at if started else None
                if is_due(schedule, now=now, last_started=last):
                    out.append((env_name, target, schedule))
        return out

    def start_due(self) -> list[Run]:
        """Request and approve each drill that is due; skip targets an incident holds."""
        store, flows = self.drills.store, self.drills.flows
        now = store.clock()
        started = []
        for env_name, target, schedule in self.due(now):
            tried = self._tried.get((env_name, target))
            if tried is not None and now - tried < RETRY:
                continue
            holder = store.runs.lock_holder(environment=env_name, targets=[target])
            if holder is not None:
                log.info(
                    "scheduled drill of %s in %s skipped: %s holds it", target, env_name, holder
                )
                continue
            try:
                opened = self.drills.open(environment=env_name, target=target, requester=SCHEDULER)
            except (Refused, ThreadNotOpened) as exc:
                self._tried[(env_name, target)] = now
                log.warning(
                    "scheduled drill of %s in %s not started (tried again in %s): %s",
                    target,
                    env_name,
                    RETRY,
                    exc,
                )
                if (  # refused, not busy since: say why; Slack down: nobody to tell now
                    isinstance(exc, Refused)
                    and store.runs.lock_holder(environment=env_name, targets=[target]) is None
                ):
                    self.tell_not_started(env_name, target, last_slot(schedule, now), str(exc))
                continue
            slot = last_slot(schedule, now).isoformat()
            try:
                run = flows.workflow.approve_scheduled(opened.run.id, slot=slot)
            except Refused as exc:  # cancelled in the meantime
                log.warning("%s: scheduled drill not approved: %s", opened.incident.id, exc)
                continue
            store.outbox.enqueue(run.id, CHANGED)
            flows.wake_outbox.set()
            flows.wake_runner.set()
            log.info("%s: scheduled drill of %s in %s started", run.incident_id, target, env_name)
            started.append(run)
        self.tell_overdue(now)
        return started

    def tell_overdue(self, now: datetime) -> list[str]:
        """Queue the overdue message of each scheduled target not yet told this period;
        return the runs that carry them."""
        store, flows = self.drills.store, self.drills.flows
        queued = []
        for env_name, env in self.drills.config.environments.items():
            for target, schedule in env.target_drills.items():
                drills = store.drills.find(environment=env_name, target=target)
                period = overdue_period(drills, schedule, now=now)
                if period is None:
                    continue
                key = (env_name, target, period.isoformat())
                if key in self._told:
                    continue
                if not self._was_told(drills, period):
                    detail = overdue_detail(env_name, target, drills, schedule, period)
                    store.outbox.enqueue(drills[0].run_id, OVERDUE, detail)
                    flows.wake_outbox.set()
                    log.warning(
                        "scheduled drills of %s in %s overdue: none succeeded within %s",
                        target,
                        env_name,
                        schedule.every,
                    )
                    queued.append(drills[0].run_id)
                self._told.add(key)
        return queued

    def tell_not_started(self, environment: str, target: str, slot: datetime, reason: str) -> bool:
        """Queue, once per slot, that the scheduled drill could not start and why; False when
        this slot's was already queued or said (by this process or another)."""
        store = self.drills.store
        key = (environment, target, f"not started {slot.isoformat()}")
        detail = {"environment": environment, "target": target, "slot": slot.isoformat()}
        if key in self._told or any(
            {k: m.detail.get(k) for k in detail} == detail and m.state in ("pending", "sent")
            for m in store.outbox.messages(None, kind=NOT_STARTED)
        ):
            self._told.add(key)
            return False
        never = not store.drills.find(environment=environment, target=target, limit=1)
        store.outbox.enqueue(
            None, NOT_STARTED, {**detail, "reason": reason, "never_drilled": never}
        )
        self.drills.flows.wake_outbox.set()
        self._told.add(key)
        return True

    def _was_told(self, drills: list[Drill], period: datetime) -> bool:
        """Whether a message of this period is queued or was sent on a recent drill run."""
        said = period.isoformat()
        return any(
            m.kind == OVERDUE and m.detail.get("period") == said and m.state in ("pending", "sent")
            for d in drills[:LOOKED_BACK]
            for m in self.drills.store.outbox.messages(d.run_id)
        )
