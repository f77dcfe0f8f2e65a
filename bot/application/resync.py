"""Resume sync: an approver puts back the GitOps sync a successful rollback left suspended.

The rollback suspended the automatic sync of the Argo CD application or Flux
object that deploys the workload (`actions.kubernetes.gitops`), because Git
still describes the bad version. After success it stays suspended, and the
thread says what to revert in Git first (`held_owners`, `revert_note`). Once
Git is fixed an approver of the environment presses Resume sync (or, when the
bot proposed the Git change, the hold resumes it by itself: `bot.execution.hold`).
This use case decides who may: only after a successful run, only for owners this
rollback suspended, only by an approver of the run's environment (users or groups,
as for approving). Doing it, once, with its event and thread message, is
`bot.execution.sync.SyncResumes`, the same code the hold calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import RollbackConfig, UnknownTarget
from bot.domain.states import RunState
from bot.execution.planner import Planner
from bot.execution.sync import (
    HeldOwner,
    ResumeOutcome,
    SyncResumer,
    SyncResumes,
    held_owners,
    revert_note,
)
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store

__all__ = ["HeldOwner", "ResumeOutcome", "Resync", "SyncResumer", "held_owners", "revert_note"]


@dataclass
class Resync:
    """The Resume sync use case."""

    store: Store
    config: RollbackConfig
    planner: Planner
    workflow: Workflow

    def resume(self, run_id: str, *, user: str, user_groups: frozenset[str]) -> ResumeOutcome:
        """Resume the sync this run suspended, once; raise Refused saying why not."""
        run, held = self._check(run_id, user=user, user_groups=user_groups)
        outcome = SyncResumes(self.store, self.config, self.planner).resume(run, held, by=user)
        if outcome.problem is not None:
            raise Refused(
                f"the sync could not be resumed ({outcome.problem}); press Resume sync again"
            )
        return outcome

    def _check(
        self, run_id: str, *, user: str, user_groups: frozenset[str]
    ) -> tuple[Run, list[HeldOwner]]:
        run = self.store.runs.get(run_id)
        if run is None:
            raise Refused("this rollback no longer exists")
        try:
            env = self.config.environment(run.environment)
        except UnknownTarget as exc:
            raise Refused(str(exc)) from exc
        if not self.workflow.is_approver(env, user, user_groups):
            raise Refused(
                f"only approvers of {run.environment} may resume the sync; nothing was changed"
            )
        if run.state != RunState.SUCCEEDED:
            raise Refused(f"the rollback is {run.state}; the sync is resumed only after success")
        held = held_owners(run)
        if not held:
            raise Refused("this rollback suspended no GitOps sync; nothing to resume")
        return run, held
