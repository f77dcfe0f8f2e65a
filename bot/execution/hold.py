"""The hold after a rollback whose Git change the bot proposed: sync comes back by itself.

A successful Kubernetes rollback leaves the workload's GitOps owners suspended (and their
ApplicationSet or parent held), because Git still names the bad version. When the target
has a `git:` source, its `git.propose` step pushed the change that makes Git name what
runs. From then on the hold is a durable loop on the re-check machinery
(`bot.execution.recheck`): one `rechecks` row per proposal (`step` `git.hold`), claimed
once across processes on the database's clock, handed back with its next due time after
each poll, its progress in the row's `spec`. A bot killed during the hold leaves the row;
whichever process claims it next carries on from what the row says (killed while resuming:
the `sync_resumes` row says "resuming" by the bot, which only a dead poll can leave, so it
is recorded as failed and the next poll resumes again).

Each poll (`POLL_SECONDS`) reads where the proposal stands (`actions.git.standing`: the
review, the branch rendered as the reconciler renders it, commits naming the bad version
again) and what runs (the undo step's re-check, `actions.kubernetes.recheck`):

- the review merged (or the direct commit on the branch), Git naming exactly the images
  that run, and the workload still on the restored template: the bot resumes sync through
  `bot.execution.sync.SyncResumes` (the code Resume sync uses), asks the owner that
  deploys the workload for one reconcile (`actions.kubernetes.hold`), and watches for it
  every `RECONCILE_POLL_SECONDS`; once it has reconciled at the commit Git was read at,
  the workload is read again and the thread is told whether nothing changed (the loop is
  closed) or what did (loud). No reconcile within `RECONCILE_WAIT_SECONDS` is said, loud;
- the review closed unmerged, conflicting with its base, or a commit on the branch
  naming the bad version again: said loudly in the thread, once per event (the row's
  `announced` keys, written in the same transaction as the message), and the hold stays;
- an approver pressing Resume sync ends the hold (the sync is theirs now); so does the
  target leaving the config (said loudly: the sync stays suspended). Git or the cluster
  that cannot be read is said once, and the hold polls on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from actions.base import ActionError
from actions.kubernetes import KubernetesParams
from bot.config import RollbackConfig
from bot.domain.states import RecheckState
from bot.execution.planner import Planner
from bot.execution.sync import BY_THE_BOT, HeldOwner, SyncResumes, held_owners
from bot.persistence.models import Recheck, Run
from bot.persistence.store import Store

if TYPE_CHECKING:
    from actions.git.standing import Standing
    from actions.kubernetes import KubernetesTarget
    from actions.kubernetes.recheck import TemplateCheck

log = logging.getLogger(__name__)

HOLD = "git.hold"
PROPOSE = "git.propose"
UNDO = ("kubernetes.rollout_undo", "kubernetes.workload_undo")
POLL_SECONDS = 60.0
RECONCILE_POLL_SECONDS = 5.0
RECONCILE_WAIT_SECONDS = 600.0
NOTIFY = "gitops.hold"
UNREADABLE = (ActionError, OSError, KeyError, ValueError)
"""What reading Git or the cluster may raise: said once, and the hold polls on (a forge's
HTTP failure comes as an ActionError, actions.git.standing)."""


@dataclass(frozen=True)
class Settle:
    """What a poll decided: the row's next state, and what the thread is told (if anything)."""

    state: str
    outcome: str
    spec: dict[str, Any]
    due_in: float | None = None
    said: dict[str, Any] | None = None


def hold_rows(run: Run) -> list[tuple[int, str, dict[str, Any]]]:
    """(position, source, spec) of the hold each proposal of the run starts, when it held sync."""
    held_sources = {owner.source for owner in held_owners(run)}
    undo = {
        str(step.get("source")): {"name": str(step["name"]), "spec": dict(step.get("spec") or {})}
        for step in run.plan
        if step.get("name") in UNDO
    }
    rows = []
    for step in run.plan:
        source = str(step.get("source") or "")
        if (step.get("spec") or {}).get("drill"):
            continue  # a drill's proposal: its own roll-forward withdraws it and resumes sync
        if step.get("name") == PROPOSE and source in held_sources and source in undo:
            spec = {"propose": dict(step.get("spec") or {}), "undo": undo[source]}
            rows.append((int(step["position"]), source, spec | {"phase": "holding"}))
    return rows


@dataclass
class GitHold:
    """One poll of one hold: read Git and the cluster, decide, say."""

    store: Store
    config: RollbackConfig
    planner: Planner

    def poll(self, recheck: Recheck, run: Run) -> Settle:
        """Decide what this poll of the hold does."""
        spec = dict(recheck.spec)
        resume = self.store.resumes.get(run.id)
        if resume is not None and resume.by != BY_THE_BOT and resume.state == "resumed":
            return Settle(RecheckState.DONE, f"the sync was resumed by {resume.by}", spec)
        if spec.get("phase") == "reconciling":
            return self._watch(recheck, run, spec)
        try:
            target = self._target(run, recheck.source)
        except KeyError as exc:
            line = f"the hold ends: {exc.args[0]}; the sync stays suspended until Resume sync"
            said = {"event": "dropped", "lines": [line], "loud": True, **_links(spec)}
            return Settle(RecheckState.DROPPED, line, spec, said=said)
        try:
            standing, live = self._read(run, recheck, spec, target)
        except UNREADABLE as exc:
            problem = f"{type(exc).__name__}: {exc}"
            log.warning("%s: the hold cannot read Git or the cluster: %s", run.incident_id, problem)
            said_before = "unreadable" in (spec.get("announced") or [])
            new = [] if said_before else [("unreadable", f"the hold cannot read: {problem}")]
            return self._announce(spec, new, held=problem)
        spec.setdefault("since", standing.head)
        # Read again: a later failure to read is news again.
        announced = [key for key in spec.get("announced") or [] if key != "unreadable"]
        spec["announced"] = announced
        new = [(key, line) for key, line in _events(standing) if key not in announced]
        if new or not self._matches(spec, standing, live):
            spec["phase"] = "holding"
            return self._announce(spec, new, held=_why_held(standing, live, spec))
        watched = _watched(held_owners(run), recheck.source)
        already = resume is not None and resume.state == "resumed"  # by this hold, then died
        # Argo CD compares Git with live while held; Flux skips a suspended object altogether.
        if not already and any(owner.tool == "argocd" for owner in watched):
            comparing = self._compare(run, spec, target, standing, watched)
            if comparing is not None:
                return comparing
        return self._release(run, recheck, spec=spec, target=target, standing=standing, live=live)

    # --- reading ---------------------------------------------------------------------------

    def _target(self, run: Run, source: str) -> KubernetesTarget:
        # Imported when a hold polls: the Kubernetes client stays out of a bot without one.
        from actions.kubernetes.target import KubernetesTarget

        env = self.config.environments.get(run.environment)
        params = env.targets.get(source) if env is not None else None
        if not isinstance(params, KubernetesParams):
            raise KeyError(f"{source} is no longer a Kubernetes target in {run.environment}")
        target = self.planner.target(params)
        if not isinstance(target, KubernetesTarget):
            raise KeyError(f"{source} is not a Kubernetes target")
        return target

    def _read(
        self, run: Run, recheck: Recheck, spec: dict[str, Any], target: KubernetesTarget
    ) -> tuple[Standing, TemplateCheck]:
        from actions.git.standing import read_standing  # the forges' HTTP client: when polled
        from actions.git.step import ProposeGitChange

        propose = ProposeGitChange.rebuild(spec["propose"])
        data = next(
            (s.data for s in self.store.steps.of(run.id) if s.position == recheck.position), {}
        )
        source = propose.source
        token = source.token.read().get_secret_value() if source.token else None
        standing = read_standing(
            source,
            review=data.get("review"),
            commit=data.get("commit"),
            bad=propose.bad_images,
            good=propose.good_images,
            since=spec.get("since"),
            token=token,
        )
        spec["proposal"] = {
            "review": data.get("review"),
            "review_url": data.get("review_url"),
            "commit": data.get("commit"),
            "branch": source.branch,
            "already": bool(data.get("already")),
        }
        undo = spec["undo"]
        return standing, target.recheck(str(undo["name"]), dict(undo["spec"]))

    @staticmethod
    def _matches(spec: dict[str, Any], standing: Standing, live: TemplateCheck) -> bool:
        proposal = spec.get("proposal") or {}
        proposed = proposal.get("review") is not None or proposal.get("commit") is not None
        landed = standing.landed or not proposed
        return landed and not live.changed and standing.names(live.live)

    # --- saying ----------------------------------------------------------------------------

    @staticmethod
    def _announce(spec: dict[str, Any], new: list[tuple[str, str]], *, held: str) -> Settle:
        """Keep holding; say the events not said before (`new`), loud, in one message."""
        spec["announced"] = [*(spec.get("announced") or []), *(key for key, _ in new)]
        said = None
        if new:
            said = {
                "event": new[0][0].split(":", 1)[0],
                "lines": [line for _, line in new],
                "held": held,
                "loud": True,
                **_links(spec),
            }
        return Settle(RecheckState.PENDING, held, spec, due_in=POLL_SECONDS, said=said)

    # --- comparing, releasing and watching ---------------------------------------------------

    def _compare(
        self,
        run: Run,
        spec: dict[str, Any],
        target: KubernetesTarget,
        standing: Standing,
        watched: list[HeldOwner],
    ) -> Settle | None:
        """Before resuming Argo CD, have it compare the branch with live itself (a hard
        refresh): resumed on a revision it had not read yet, it would sync the old one.
        None once it finds them Synced at the head the bot read."""
        from actions.kubernetes import hold as kube_hold

        head, who = standing.head, _who(watched)
        if spec.get("phase") != "comparing" or spec.get("revision") != head:
            token = f"{run.incident_id.lower()}-{head[:12]}"
            for owner in watched:
                kube_hold.request_reconcile(target, owner.spec, token=token)
            spec |= {
                "phase": "comparing",
                "revision": head,
                "token": token,
                "asked_at": self.store.clock().isoformat(),
            }
            line = f"Git names what runs at {head[:12]}; {who} asked to compare before resuming"
            return Settle(RecheckState.PENDING, line, spec, due_in=RECONCILE_POLL_SECONDS)
        found = [
            kube_hold.reconciled(target, owner.spec, token=str(spec["token"]), revision=head)
            for owner in watched
        ]
        if all(status == "Synced" for status in found):
            return None
        if any(status is not None for status in found):
            spec["phase"] = "holding"
            key = f"out-of-sync:{head}"
            line = f"{who} finds live OutOfSync with Git at {head[:12]}: more than images differ"
            new = [] if key in (spec.get("announced") or []) else [(key, line)]
            return self._announce(spec, new, held=line)
        if self._waited(spec, "asked_at") >= RECONCILE_WAIT_SECONDS:
            spec["phase"] = "holding"  # asked again at the next poll
            return Settle(RecheckState.PENDING, f"{who} did not compare", spec, due_in=POLL_SECONDS)
        line = f"waiting for {who} to compare Git at {head[:12]} with live"
        return Settle(RecheckState.PENDING, line, spec, due_in=RECONCILE_POLL_SECONDS)

    def _waited(self, spec: dict[str, Any], key: str) -> float:
        since = datetime.fromisoformat(str(spec[key]))
        return (self.store.clock() - since).total_seconds()

    def _release(
        self,
        run: Run,
        recheck: Recheck,
        *,
        spec: dict[str, Any],
        target: KubernetesTarget,
        standing: Standing,
        live: TemplateCheck,
    ) -> Settle:
        from actions.kubernetes import hold as kube_hold

        held = held_owners(run)
        resumes = SyncResumes(self.store, self.config, self.planner)
        outcome = resumes.resume(run, held, by=BY_THE_BOT)
        if outcome.by != BY_THE_BOT:
            if outcome.state == "resuming":  # an approver is pressing Resume sync right now
                return Settle(RecheckState.PENDING, "resuming", spec, due_in=RECONCILE_POLL_SECONDS)
            return Settle(RecheckState.DONE, f"the sync was resumed by {outcome.by}", spec)
        if outcome.state == "resuming":
            # This poll holds the claim, so the poll that began resuming lost it: it died in
            # the middle. Its attempt is recorded as failed; the next poll resumes again
            # (putting back a recorded sync policy twice leaves it as once).
            stopped = "a bot process stopped while resuming the sync; the hold resumes it again"
            self.store.resumes.end(
                run, by=BY_THE_BOT, ok=False, outcome=stopped, detail={"owners": [], "lines": []}
            )
            return Settle(RecheckState.PENDING, stopped, spec, due_in=RECONCILE_POLL_SECONDS)
        if outcome.state == "failed":
            said = {
                "event": "resume-failed",
                "lines": [f"the sync could not be resumed: {outcome.problem or 'refused'}"],
                "held": "press Resume sync once the cluster answers",
                "loud": True,
                **_links(spec),
            }
            return Settle(RecheckState.FAILED, said["lines"][0], spec, said=said)
        token = f"{run.incident_id.lower()}-{standing.head[:12]}"
        watched = _watched(held, recheck.source)
        for owner in watched:
            kube_hold.request_reconcile(target, owner.spec, token=token)
        spec |= {
            "phase": "reconciling",
            "revision": standing.head,
            "token": token,
            "resumed_at": self.store.clock().isoformat(),
            "matched": standing.said(live.live),
        }
        line = f"Git names what runs ({spec['matched']}); sync resumed, one reconcile asked"
        log.info("%s: %s", run.incident_id, line)
        return Settle(RecheckState.PENDING, line, spec, due_in=RECONCILE_POLL_SECONDS)

    def _watch(self, recheck: Recheck, run: Run, spec: dict[str, Any]) -> Settle:
        from actions.kubernetes import hold as kube_hold

        watched = _watched(held_owners(run), recheck.source)
        try:
            target = self._target(run, recheck.source)
            done = all(
                kube_hold.reconciled(
                    target, owner.spec, token=str(spec["token"]), revision=str(spec["revision"])
                )
                is not None
                for owner in watched
            )
            live = target.recheck(str(spec["undo"]["name"]), dict(spec["undo"]["spec"]))
        except UNREADABLE as exc:
            done, live = False, None
            log.warning("%s: reconcile not read: %s", run.incident_id, exc)
        revision = str(spec["revision"])[:12]
        if done and live is not None:
            who = _who(watched)
            if not live.changed:
                line = f"{who} reconciled at {revision}: {live.detail}; nothing changed"
                said = {"event": "confirmed", "lines": [line], "loud": False, **_links(spec)}
            else:
                line = f"{who} reconciled at {revision} and changed the workload: {live.detail}"
                said = {"event": "changed", "lines": [line], "loud": True, **_links(spec)}
            return Settle(RecheckState.DONE, line, spec, said=said | {"matched": spec["matched"]})
        waited = self._waited(spec, "resumed_at")
        if waited < RECONCILE_WAIT_SECONDS:
            waiting = "waiting for one reconcile"
            return Settle(RecheckState.PENDING, waiting, spec, due_in=RECONCILE_POLL_SECONDS)
        line = (
            f"the sync was resumed {waited / 60:.0f} min ago, but no reconcile at {revision} "
            "was seen: look at the owner by hand"
        )
        said = {"event": "no-reconcile", "lines": [line], "loud": True, **_links(spec)}
        return Settle(RecheckState.FAILED, line, spec, said=said)


def _watched(held: list[HeldOwner], source: str) -> list[HeldOwner]:
    """The owner that deploys the workload: the source's last held one (parents come first)."""
    own = [o for o in held if o.source == source and o.tool != "argocd-applicationset"]
    return own[-1:]


def _who(watched: list[HeldOwner]) -> str:
    return " and ".join(owner.label for owner in watched) or "the owner"


def _links(spec: dict[str, Any]) -> dict[str, Any]:
    proposal = spec.get("proposal") or {}
    return {
        "review_url": proposal.get("review_url"),
        "commit": proposal.get("commit"),
        "branch": proposal.get("branch"),
    }


def _events(standing: Standing) -> list[tuple[str, str]]:
    """(key, line) of each event the thread must hear about, keyed so each is said once."""
    from actions.git.forges import ReviewState

    events = []
    review = standing.review
    if review is not None and review.state is ReviewState.CLOSED:
        events.append((f"closed:{review.number}", f"{review.url} was closed without being merged"))
    if review is not None and standing.conflicts:
        events.append(
            (f"conflict:{review.number}", f"{review.url} conflicts with its base: not mergeable")
        )
    for commit in standing.bad_commits:
        events.append(
            (
                f"bad:{commit.sha}",
                f"commit {commit.sha[:12]} ({commit.subject}) names the bad version again",
            )
        )
    return events


def _why_held(standing: Standing, live: TemplateCheck, spec: dict[str, Any]) -> str:
    """Why the hold stays, in a few words."""
    from actions.git.forges import ReviewState

    if live.changed:
        return f"the workload left the restored template ({live.detail})"
    review = standing.review
    if review is not None and review.state is not ReviewState.MERGED:
        state = "closed unmerged" if review.state is ReviewState.CLOSED else "not merged yet"
        return f"{review.url} is {state}"
    if not standing.landed and (spec.get("proposal") or {}).get("commit"):
        return "the commit is not on the branch"
    return f"Git names {standing.said(live.live)}, production runs {', '.join(live.live)}"


def due(store: Store, settle: Settle) -> datetime | None:
    """When the row is due again, on the database's clock."""
    if settle.due_in is None:
        return None
    return store.clock() + timedelta(seconds=settle.due_in)
