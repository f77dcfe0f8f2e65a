"""What the Slack side reads: each question one read of the store, the answer read-only.

Handlers draw cards, threads, the home tab and `/rollback status` from what is recorded;
they ask it here and get records typed by `bot.domain.records` (the rows as read, with no
session behind them and nothing to write), or the pure read models computed from them
(what a failed run left behind, an incident's recovery phases, a target's drill
standing). Writes go through the use cases (`bot.application.flows` and its parts) and
`bot.application.posted`; handlers never import persistence (the import contract says so).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.application.drills import DrillStatus, target_status
from bot.application.failures import disarmed_by
from bot.config import Environment, RollbackConfig
from bot.domain.aftermath import Aftermath, aftermath
from bot.domain.records import (
    EventRecord,
    IncidentRecord,
    OutboxRecord,
    PostRecord,
    ResumeRecord,
    ReviewRecord,
    RunRecord,
    StepView,
)
from bot.domain.recovery import Recovery, recovery
from bot.execution.workflow import Workflow
from bot.persistence.store import Store


class Reads:
    """The read side of the store, for the Slack side."""

    def __init__(self, store: Store, config: RollbackConfig, workflow: Workflow) -> None:
        self._store = store
        self._config = config
        self._workflow = workflow

    def now(self) -> datetime:
        """The clock the database agrees on (`Database.clock`)."""
        return self._store.clock()

    def run(self, run_id: str) -> RunRecord | None:
        """The run, or None if there is no such run."""
        return self._store.runs.get(run_id)

    def runs(
        self,
        *,
        incident_id: str | None = None,
        environment: str | None = None,
        target: str | None = None,
        states: tuple[str, ...] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs, newest first, filtered."""
        return list(
            self._store.runs.find(
                incident_id=incident_id,
                environment=environment,
                target=target,
                states=states,
                limit=limit,
            )
        )

    def unresolved_failures(self) -> list[RunRecord]:
        """Failed runs nobody resolved yet (`Runs.unresolved_failures`)."""
        return list(self._store.runs.unresolved_failures())

    @property
    def lock_holder(self) -> Callable[..., str | None]:
        """Which incident holds any of `targets` in `environment` (`Runs.lock_holder`)."""
        return self._store.runs.lock_holder

    def approvals(self, run: RunRecord) -> list[tuple[str, datetime]]:
        """(approver, time) of the approvals that count for the run's plan."""
        return self._workflow.approvals(run)

    def is_approver(self, env: Environment, user: str, user_groups: frozenset[str]) -> bool:
        """Whether `user` is a configured approver of `env`, directly or through a group."""
        return self._workflow.is_approver(env, user, user_groups)

    def incident(self, incident_id: str) -> IncidentRecord | None:
        """The incident, or None."""
        return self._store.incidents.get(incident_id)

    def events(self, incident_id: str) -> list[EventRecord]:
        """The incident's timeline, oldest first."""
        return list(self._store.events.of(incident_id))

    def steps(self, run_id: str) -> list[StepView]:
        """The run's step records in plan order."""
        return self._store.steps.of(run_id)

    def review(self, run_id: str) -> ReviewRecord | None:
        """The break-glass run's review, or None."""
        return self._store.reviews.get(run_id)

    def unreviewed(self, *, limit: int = 50) -> list[ReviewRecord]:
        """The break-glass reviews not yet done, oldest first."""
        return list(self._store.reviews.pending(limit=limit))

    def post(self, run_id: str, slot: str) -> PostRecord | None:
        """The message the bot posted in the run's thread in `slot`, or None."""
        return self._store.posts.slot(run_id, slot)

    def run_of_post(self, *, channel: str | None, ts: str) -> str | None:
        """The run whose thread holds the message (channel, ts), or None."""
        return self._store.posts.run_of(channel=channel, ts=ts)

    def outbox(self, run_id: str | None, *, kind: str | None = None) -> list[OutboxRecord]:
        """The outbox messages of a run (None: those of no run), oldest first."""
        return list(self._store.outbox.messages(run_id, kind=kind))

    def resume(self, run_id: str) -> ResumeRecord | None:
        """Who pressed Resume sync for the run, and what came of it, or None."""
        return self._store.resumes.get(run_id)

    def aftermath(
        self, run: RunRecord, events: list[EventRecord] | None = None
    ) -> Aftermath | None:
        """What people decided since the run failed (`bot.domain.aftermath`); None unless it
        failed. `events`: the incident's, when the caller read them already."""
        if run.state != "failed":
            return None
        if events is None:
            events = self.events(run.incident_id)
        return aftermath(run.plan, self.steps(run.id), events, run.id)

    def disarmed_by(self, *, environment: str, target: str) -> RunRecord | None:
        """The automatic rollback that disarmed automatic rollback of `target`, or None."""
        return disarmed_by(self._store, environment=environment, target=target)

    def drill_status(self, environment: str, target: str) -> DrillStatus | None:
        """The target's drill standing, or None when the environment is not configured."""
        env = self._config.environments.get(environment)
        if env is None:
            return None
        return target_status(self._store, environment, env, target, now=self.now())

    def recent_recoveries(self, *, limit: int = 5, skip_source: str = "drill") -> list[Recovery]:
        """The recovery phases of the newest finished incidents (drills left out), newest
        first."""
        seen: list[str] = []
        for run in self._store.runs.find(states=("succeeded", "failed"), limit=limit * 4):
            if run.incident_id not in seen:
                seen.append(run.incident_id)
        out = []
        for incident_id in seen:
            incident = self._store.incidents.get(incident_id)
            if incident is None or incident.source == skip_source:
                continue
            out.append(recovery(incident, self._store.events.of(incident_id)))
            if len(out) == limit:
                break
        return out
