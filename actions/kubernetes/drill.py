"""The GitOps parts of a drill of a workload Argo CD or Flux deploys from a `git:` source.

A drill rehearses the whole loop an incident runs (`bot.execution.drill_forward` plans it):
sync suspended (parents held), the rollback, the Git change proposed, then these steps:

- `kubernetes.drill_hold` (after the proposal): the proposal is what it should be (the
  drill's branch, rendered as the reconciler renders it, names what runs; its review is
  open; the base does not name it) and the hold holds (each owner the drill suspended is
  still suspended, each parent still held, the workload still on the restored template);
- `git.withdraw` (`actions.git.drill`), first in the roll-forward;
- `kubernetes.resume_sync` per held owner after the roll-forward, parents first: the sync
  put back exactly as recorded when it was suspended (Argo CD's `automated` with its
  `selfHeal` and `prune`, Flux's `suspend`, an ApplicationSet's rules taken out);
- `kubernetes.confirm_reconcile`: the owner that deploys the workload is asked for one
  reconcile at the base's head and, once it has done it, the workload must run what it
  ran before the drill.

Withdrawal and resumption are `always` steps: a drill that fails half-way still leaves no
review open, no branch and no sync suspended (resumed, the owner puts Git's version, the
one that ran before the drill, back by itself).
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client import ApiClient, AppsV1Api

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
from actions.git.drill import drill_standing
from actions.git.edit import ImageRef
from actions.git.forges import Forge
from actions.git.params import GitSource
from actions.git.repo import cloned
from actions.kubernetes import gitops
from actions.kubernetes.owners import Owner, suspended_here
from actions.kubernetes.recheck import TemplateCheck, recheck_deployment, recheck_workload
from actions.kubernetes.rollout import RolloutUndo
from actions.kubernetes.workloads import WorkloadUndo

POLL_SECONDS = 0.5
RECONCILE = "reconcile"
"""The confirm step's memory: the token and revision it asked a reconcile for."""


def _owner(spec: dict[str, Any]) -> Owner:
    return Owner(spec["tool"], str(spec["owner"]), str(spec["namespace"]), True)


def recheck_undo(api: ApiClient, undo: dict[str, Any]) -> TemplateCheck:
    """Compare the workload an undo step (`{"name", "spec"}`) restored with what runs."""
    apps = AppsV1Api(api)
    if undo["name"] == RolloutUndo.name:
        rollout = RolloutUndo.rebuild(undo["spec"], apps=apps)
        return recheck_deployment(
            apps,
            namespace=rollout.namespace,
            name=rollout.deployment,
            to_revision=rollout.to_revision,
            images=rollout.images,
        )
    workload = WorkloadUndo.rebuild(undo["spec"], apps=apps)
    return recheck_workload(
        apps,
        workload.kind,
        namespace=workload.namespace,
        name=workload.workload,
        revision_name=workload.revision_name,
        images=workload.images,
    )


def _token(source: GitSource) -> str | None:
    return source.token.read().get_secret_value() if source.token else None


class DrillHold(Step):
    """Check the drill's proposal, and that sync stays held while it is open."""

    name: str = fixed("kubernetes.drill_hold")
    idempotent: bool = fixed(True)
    timeout: float = 120.0
    api: ApiClient = given()
    forge: Forge | None = given(default=None)
    source: GitSource
    workload: str
    images: tuple[str, ...]
    """What the rollback restored: what the drill's branch must name."""
    held: tuple[dict[str, Any], ...]
    """The specs of the suspend steps before the rollback, parents first."""
    undo: dict[str, Any]
    """The rollback's undo step (`name`, `spec`)."""

    def describe(self) -> str:
        """Say what is checked."""
        owners = ", ".join(_owner(spec).label for spec in self.held)
        review = "its review is open, " if self.source.change == "pull-request" else ""
        held = f"{owners} still suspended, " if owners else ""
        return (
            f"Check the drill's Git change: the drill's branch names what {self.workload} runs, "
            f"{review}{self.source.branch} does not; and the hold holds: {held}"
            f"{self.workload} still on the restored template"
        )

    def label(self) -> str:
        """Words for people."""
        return f"Check the drill's Git change and the hold on {self.workload}"

    def run(self, ctx: StepContext) -> StepResult:
        """Read Git and the cluster; any part that is not as it should be fails the drill."""
        standing = drill_standing(
            self.source,
            incident=ctx.incident_id,
            images=self.images,
            token=_token(self.source),
            forge=self.forge,
        )
        lines, problems = [], []
        named = {ImageRef.parse(i).repository: [i] for i in self.images}
        shown = "; ".join(", ".join(v) or k for k, v in standing.named.items())
        if all(standing.named.get(repo) == want for repo, want in named.items()):
            lines.append(f"{standing.branch} names {shown}")
        else:
            problems.append(f"{standing.branch} names {shown}, not {', '.join(self.images)}")
        if any(standing.base_named.get(repo) == want for repo, want in named.items()):
            problems.append(f"{self.source.branch} names the drill's version: the change landed")
        if self.source.change == "pull-request":
            if standing.review is None:
                problems.append(f"no review is open for {standing.branch} (merged or closed?)")
            else:
                lines.append(f"{standing.review.url} is open, not merged")
        for spec in self.held:
            owner = _owner(spec)
            if not suspended_here(
                ctx.memory, owner.tool, namespace=owner.namespace, name=owner.name
            ):
                continue  # not automatic before the drill: nothing was held
            children = tuple(spec.get("children") or ())
            if gitops.holds(
                self.api, owner.tool, namespace=owner.namespace, name=owner.name, children=children
            ):
                lines.append(f"{owner.label} still held")
            else:
                problems.append(f"{owner.label} is no longer held")
        live = recheck_undo(self.api, self.undo)
        (problems if live.changed else lines).append(live.detail)
        for line in lines:
            ctx.emit(line)
        if problems:
            raise PermanentError("the drill's loop does not hold: " + "; ".join(problems))
        return StepResult(summary="; ".join(lines))


class ResumeSync(Step):
    """Resume an owner's sync exactly as recorded when the drill suspended it."""

    name: str = fixed("kubernetes.resume_sync")
    idempotent: bool = fixed(True)
    timeout: float = 60.0
    api: ApiClient = given()
    suspend: dict[str, Any]
    """The suspend step's spec."""

    def describe(self) -> str:
        """Name the owner and what comes back."""
        owner = _owner(self.suspend)
        if owner.tool == "argocd-applicationset":
            return f"Release {owner.label}: take out the rules the drill's hold added"
        return (
            f"Resume the automatic sync of {owner.label} exactly as it was before the drill "
            "(as recorded when it was suspended)"
        )

    def label(self) -> str:
        """Words for people."""
        return f"Resume the sync of {_owner(self.suspend).label}"

    def run(self, ctx: StepContext) -> StepResult:
        """Put the recorded sync back; nothing recorded (not suspended by the drill): as is."""
        owner = _owner(self.suspend)
        line = gitops.resume_sync(
            self.api, owner.tool, namespace=owner.namespace, name=owner.name, memory=ctx.memory
        )
        ctx.emit(line)
        return StepResult(summary=line)


class ConfirmReconcile(Step):
    """Ask the owner for one reconcile at the base's head; the workload must run as before."""

    name: str = fixed("kubernetes.confirm_reconcile")
    idempotent: bool = fixed(True)
    timeout: float = 300.0
    api: ApiClient = given()
    source: GitSource
    owner: dict[str, Any]
    """The suspend step's spec of the owner that deploys the workload."""
    undo: dict[str, Any]
    """The roll-forward's undo step (`name`, `spec`): what ran before the drill."""

    def describe(self) -> str:
        """Say what is asked and what must hold."""
        images = ", ".join(self.undo["spec"].get("images") or ())
        return (
            f"Ask {_owner(self.owner).label} for one reconcile at the head of "
            f"{self.source.branch}; the workload must still run {images}, as before the drill"
        )

    def label(self) -> str:
        """Words for people."""
        return f"Confirm one reconcile by {_owner(self.owner).label}"

    def run(self, ctx: StepContext) -> StepResult:
        """Ask once (a resumed step waits for what it asked), wait, compare."""
        owner = _owner(self.owner)
        if gitops.holds(self.api, owner.tool, namespace=owner.namespace, name=owner.name):
            # Suspended before the drill (so left suspended): nothing reconciles by itself.
            return StepResult(
                summary=f"{owner.label} does not sync automatically: no reconcile to watch",
                skipped=True,
            )
        with cloned(self.source.repository, self.source.branch, token=_token(self.source)) as git:
            head = git.head()
        asked = ctx.memory.get(RECONCILE)
        if not isinstance(asked, dict) or asked.get("revision") != head:
            asked = {"revision": head, "token": f"{ctx.incident_id.lower()}-drill-{head[:12]}"}
            ctx.memory[RECONCILE] = asked
            gitops.request_reconcile(
                self.api,
                owner.tool,
                namespace=owner.namespace,
                name=owner.name,
                token=str(asked["token"]),
            )
        deadline = time.monotonic() + self.timeout
        while True:
            found = gitops.reconciled(
                self.api,
                owner.tool,
                namespace=owner.namespace,
                name=owner.name,
                token=str(asked["token"]),
                revision=head,
            )
            if found is not None:
                break
            if time.monotonic() >= deadline:
                raise PermanentError(
                    f"{owner.label} did not reconcile at {head[:12]} within {self.timeout:.0f} s"
                )
            time.sleep(POLL_SECONDS)
        live = recheck_undo(self.api, self.undo)
        if live.changed:
            raise PermanentError(
                f"{owner.label} reconciled at {head[:12]} ({found}) and left {live.detail}, "
                "not what ran before the drill"
            )
        line = f"{owner.label} reconciled at {head[:12]} ({found}): {live.detail}, as before"
        ctx.emit(line)
        return StepResult(summary=line)
