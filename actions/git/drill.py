"""A drill's Git proposal: read where it stands, and withdraw it without a trace.

A drill exercises the whole GitOps loop in staging, so its proposal is made the way an
incident's is (the same token, push, rendering and, with `change: pull-request`, the
provider's review API), but on the drill's own branch `drill/<incident>`:

- with `change: pull-request`, a real pull or merge request from that branch into the base,
  titled "Drill, do not merge": it tests every credential and API call the real loop
  needs, and the base changes only if a person merges it (which the drill's hold check
  refuses loudly, and the roll-forward cannot undo for them);
- with `change: commit`, a commit on that branch, never on the base: committing to the base
  would change what the team's branch names, which a rehearsal must not.

The roll-forward withdraws it: the review closed unmerged, the branch deleted. Both are
found again from the branch's name alone, so a drill killed anywhere (even between the
review being opened and its number being recorded) withdraws what it left.
"""

from __future__ import annotations

from dataclasses import dataclass

from actions.base import PermanentError, Step, StepContext, StepResult, fixed, given
from actions.git.desired import desired
from actions.git.edit import ImageRef
from actions.git.forges import Forge, Review
from actions.git.params import GitSource
from actions.git.propose import branch_for, forge_for
from actions.git.repo import Git, cloned


@dataclass(frozen=True)
class DrillStanding:
    """The drill's branch and review, and the base beside them."""

    branch: str
    review: Review | None
    named: dict[str, list[str]]
    """Per image repository, what the drill's branch names (rendered as the reconciler does)."""
    base_named: dict[str, list[str]]
    """The same, on the base: a drill leaves it alone."""


def _forge(source: GitSource, token: str | None, forge: Forge | None) -> Forge | None:
    if source.change != "pull-request":
        return None
    if forge is not None:
        return forge
    if token is None:
        raise PermanentError("a drill's pull request needs a token for the provider's API")
    return forge_for(source, token)


def drill_standing(
    source: GitSource,
    *,
    incident: str,
    images: tuple[str, ...],
    token: str | None = None,
    forge: Forge | None = None,
) -> DrillStanding:
    """Read the drill's branch and review (`images`: whose repositories to read)."""
    branch = branch_for(source, incident, drill=True)
    found = _forge(source, token, forge)
    review = found.find_open(branch=branch, base=source.branch) if found is not None else None
    repositories = {ImageRef.parse(image).repository for image in images}
    with cloned(source.repository, source.branch, token=token) as git:
        base_named = desired(git.directory, source.path, repositories)
        if git.remote_head(branch) is None:
            raise PermanentError(f"the drill's branch {branch} is not in {source.repository}")
        git.run("fetch", "--quiet", "--depth", "1", "origin", f"refs/heads/{branch}")
        git.run("checkout", "--quiet", "--detach", "FETCH_HEAD")
        named = desired(git.directory, source.path, repositories)
    return DrillStanding(branch, review, named, base_named)


def withdraw(
    source: GitSource, *, incident: str, token: str | None = None, forge: Forge | None = None
) -> list[str]:
    """Close the drill's open review unmerged and delete its branch; say what was done
    (nothing left to withdraw: an empty list)."""
    branch = branch_for(source, incident, drill=True)
    said = []
    found = _forge(source, token, forge)
    review = found.find_open(branch=branch, base=source.branch) if found is not None else None
    if found is not None and review is not None:
        found.close(review.number)
        said.append(f"closed {review.url} unmerged")
    with cloned(source.repository, source.branch, token=token) as git:
        if _delete(git, branch):
            said.append(f"deleted the branch {branch}")
    return said


def _delete(git: Git, branch: str) -> bool:
    if git.remote_head(branch) is None:
        return False
    git.run("push", "--quiet", "origin", "--delete", f"refs/heads/{branch}")
    return True


class WithdrawProposal(Step):
    """Close the drill's review unmerged and delete its branch."""

    name: str = fixed("git.withdraw")
    idempotent: bool = fixed(True)
    timeout: float = 120.0
    forge: Forge | None = given(default=None)
    source: GitSource
    workload: str

    def describe(self) -> str:
        """Say what is withdrawn."""
        review = (
            "close the drill's review unmerged and " if self.source.change == "pull-request" else ""
        )
        return (
            f"Withdraw the drill's Git change for {self.workload}: {review}delete the branch "
            f"drill/<incident> in {self.source.repository}; {self.source.branch} is not touched"
        )

    def label(self) -> str:
        """Words for people."""
        return f"Withdraw the drill's Git change for {self.workload}"

    def run(self, ctx: StepContext) -> StepResult:
        """Withdraw what is there (a resumed step finds less, or nothing)."""
        token = self.source.token.read().get_secret_value() if self.source.token else None
        said = withdraw(self.source, incident=ctx.incident_id, token=token, forge=self.forge)
        for line in said:
            ctx.emit(line)
        return StepResult(summary="; ".join(said) or "nothing left to withdraw")
