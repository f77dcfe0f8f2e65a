"""Resuming the GitOps sync a successful rollback left suspended: the one place that does it.

Two callers resume: an approver's Resume sync (`bot.application.resync`, which checks who
may) and the hold after a Git proposal (`bot.execution.hold`, once Git names what runs).
Both go through `SyncResumes.resume`, so the rules are the same for both:

- only owners this rollback suspended (its suspend step recorded what it replaced in the
  run's memory) are resumed, parents first (plan order);
- exactly once: `Resumes.begin` inserts the run's `sync_resumes` row before the
  cluster is called, so a second press, or the hold and a press in the same instant, is
  told who resumed it and when, and nothing is called again. An attempt that failed (the
  API server refused) may be made again;
- the result, its audit event (`sync.resumed`) and its thread message (`gitops.resumed`,
  through the outbox) are one transaction.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from actions.base import ActionError
from actions.kubernetes import KubernetesParams
from actions.kubernetes.owners import Owner, suspended_here
from bot.config import RollbackConfig
from bot.domain.records import RunRecord
from bot.execution.planner import Planner
from bot.persistence.models import Run
from bot.persistence.store import Store

SUSPEND = "kubernetes.suspend_sync"
BY_THE_BOT = ""
"""Who resumed, when the hold did: the empty actor, shown in Slack as "the bot"."""


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


def held_owners(run: RunRecord) -> list[HeldOwner]:
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
    """What a resume did, or who had already done it and when."""

    resumed: bool
    by: str
    at: datetime
    lines: tuple[str, ...] = ()
    state: str = "resumed"
    """resumed, failed, or resuming (another caller is at it now)."""
    problem: str | None = None
    """What the cluster refused (state failed); a later attempt may succeed."""


@dataclass
class SyncResumes:
    """Resume the owners a run held, once, whoever asks."""

    store: Store
    config: RollbackConfig
    planner: Planner

    def resume(self, run: Run, held: list[HeldOwner], *, by: str) -> ResumeOutcome:
        """Resume `held` (the run's held owners) as `by`, unless someone did or is doing it."""
        earlier = self.store.resumes.begin(run.id, by=by)
        if earlier is not None:
            return ResumeOutcome(False, earlier.by, earlier.at, state=earlier.state)
        # A copy: the run's memory keeps what the rollback suspended, for the record and for
        # the messages; the sync_resumes row says it was resumed.
        memory = dict(run.memory)
        lines, problem = [], None
        for owner in held:
            try:
                lines.append(self.target(run, owner).resume_sync(owner.spec, memory))
            except (ActionError, KeyError, ValueError) as exc:
                problem = f"{owner.label}: {exc}"
                break
        self.store.resumes.end(
            run,
            by=by,
            ok=problem is None,
            outcome=problem or "; ".join(lines),
            detail={"owners": [o.label for o in held], "lines": lines},
        )
        state = "resumed" if problem is None else "failed"
        return ResumeOutcome(
            problem is None, by, self.store.clock(), tuple(lines), state=state, problem=problem
        )

    def target(self, run: Run, owner: HeldOwner) -> SyncResumer:
        """The configured target the owner's suspend step came from."""
        env = self.config.environments.get(run.environment)
        params = env.targets.get(owner.source) if env is not None else None
        if not isinstance(params, KubernetesParams):
            raise KeyError(f"{owner.source} is no longer a Kubernetes target in {run.environment}")
        target = self.planner.target(params)
        if not isinstance(target, SyncResumer):
            raise KeyError(f"{owner.source} cannot resume a GitOps sync")
        return target
