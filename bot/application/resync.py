"""Resume sync: an approver puts back the GitOps sync a successful rollback left suspended.

The rollback suspended the automatic sync of the Argo CD application or Flux
object that deploys the workload (`actions.kubernetes.gitops`), because Git
still describes the bad version. After success it stays suspended, and the
thread says what to revert in Git first (`held_owners`, `revert_note`). Once
Git is fixed an approver of the environment presses Resume sync; this use
case is the one place that decides and does it:

- only after a successful run, only for owners this rollback suspended (its
  suspend step recorded what it replaced in the run's memory), only by an
  approver of the run's environment (users or groups, as for approving);
- exactly once: `Store.begin_resume` inserts the run's `sync_resumes` row
  before the cluster is called, so a second press, or a second approver in the
  same instant, is told who resumed it and when, and nothing is called again.
  An attempt that failed (the API server refused) may be pressed again;
- the result, its audit event (`sync.resumed`, actor the approver) and its
  thread message (`gitops.resumed`, through the outbox) are one transaction.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from actions.base import ActionError
from actions.kubernetes import KubernetesParams
from actions.kubernetes.owners import Owner, suspended_here
from bot.config import RollbackConfig, UnknownTarget
from bot.domain.states import RunState
from bot.execution.planner import Planner
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store

SUSPEND = "kubernetes.suspend_sync"


@dataclass(frozen=True)
class HeldOwner:
    """A GitOps owner this run suspended and left suspended: who, and what to revert in Git."""

    source: str
    tool: str
    namespace: str
    name: str
    revert: str
    spec: dict[str, Any]

    @property
    def label(self) -> str:
        """`Argo CD application voxflow in argocd`."""
        return Owner(self.tool, self.name, self.namespace, True).label  # type: ignore[arg-type]


def held_owners(run: Run) -> list[HeldOwner]:
    """The owners the run's suspend steps switched off (recorded in its memory)."""
    held = []
    for step in run.plan:
        spec = step.get("spec") or {}
        if step.get("name") != SUSPEND or not spec:
            continue
        tool, namespace, name = str(spec["tool"]), str(spec["namespace"]), str(spec["owner"])
        if suspended_here(run.memory, tool, namespace=namespace, name=name):
            held.append(
                HeldOwner(
                    source=str(step.get("source") or ""),
                    tool=tool,
                    namespace=namespace,
                    name=name,
                    revert=str(spec.get("revert") or "revert the release"),
                    spec=dict(spec),
                )
            )
    return held


def revert_note(owner: HeldOwner) -> str:
    """What must happen in Git before the sync is resumed."""
    return (
        f"{owner.label} stays suspended: {owner.revert} in Git first, then resume its sync; "
        "resuming before Git is fixed redeploys the bad version"
    )


@runtime_checkable
class SyncResumer(Protocol):
    """A target that resumes the sync one of its suspend steps switched off."""

    def resume_sync(self, spec: dict[str, Any], memory: MutableMapping[str, Any]) -> str: ...


@dataclass(frozen=True)
class ResumeOutcome:
    """What a press of Resume sync did, or who had already done it and when."""

    resumed: bool
    by: str
    at: datetime
    lines: tuple[str, ...] = ()
    state: str = "resumed"
    """resumed, failed, or resuming (another press is at it now)."""


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
        earlier = self.store.begin_resume(run.id, by=user)
        if earlier is not None:
            return ResumeOutcome(False, earlier.by, earlier.at, state=earlier.state)
        # A copy: the run's memory keeps what the rollback suspended, for the record and for
        # this message; the sync_resumes row says it was resumed.
        memory = dict(run.memory)
        lines, problem = [], None
        for owner in held:
            try:
                lines.append(self._target(run, owner).resume_sync(owner.spec, memory))
            except (ActionError, KeyError, ValueError) as exc:
                problem = f"{owner.label}: {exc}"
                break
        owners = [o.label for o in held]
        outcome = problem or "; ".join(lines)
        self.store.end_resume(
            run,
            by=user,
            ok=problem is None,
            outcome=outcome,
            detail={"owners": owners, "lines": lines},
        )
        if problem is not None:
            raise Refused(f"the sync could not be resumed ({problem}); press Resume sync again")
        return ResumeOutcome(True, user, self.store.clock(), tuple(lines))

    def _check(
        self, run_id: str, *, user: str, user_groups: frozenset[str]
    ) -> tuple[Run, list[HeldOwner]]:
        run = self.store.run(run_id)
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

    def _target(self, run: Run, owner: HeldOwner) -> SyncResumer:
        env = self.config.environment(run.environment)
        params = env.targets.get(owner.source)
        if not isinstance(params, KubernetesParams):
            raise KeyError(f"{owner.source} is no longer a Kubernetes target in {run.environment}")
        target = self.planner.target(params)
        if not isinstance(target, SyncResumer):
            raise KeyError(f"{owner.source} cannot resume a GitOps sync")
        return target
