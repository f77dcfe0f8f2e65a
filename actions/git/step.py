"""The plan step that proposes, after a verified rollback, the Git change matching production.

It runs in the verify phase, after the rollout is confirmed: a failed rollback proposes
nothing, and a proposal always names what production really runs. It is safe to run again
after a crash (`propose` reuses the incident's branch and review). Before approval the
target asks the provider whether its token may push (`access_findings`): a token that
cannot is a risky finding naming the permission, never a surprise after the rollback.
"""

from __future__ import annotations

from typing import Any

import httpx

from actions.base import (
    ActionError,
    Finding,
    Level,
    Step,
    StepContext,
    StepResult,
    fixed,
    given,
    sparse,
)
from actions.git.edit import ImageRef
from actions.git.forges import Forge
from actions.git.params import GitSource
from actions.git.propose import forge_for, propose


def image_pairs(bad: tuple[str, ...], good: tuple[str, ...]) -> list[tuple[ImageRef, ImageRef]]:
    """(bad, good) per container image that differs, matched by repository."""
    running = {ImageRef.parse(image).repository: ImageRef.parse(image) for image in bad}
    pairs = []
    for image in good:
        to = ImageRef.parse(image)
        was = running.get(to.repository)
        if was is not None and str(was) != str(to):
            pairs.append((was, to))
    return pairs


class ProposeGitChange(Step):
    """Push the change that makes Git name the images production was rolled back to."""

    name: str = fixed("git.propose")
    idempotent: bool = fixed(True)
    timeout: float = 180.0
    forge: Forge | None = given(default=None)
    source: GitSource
    """Stored without its token's value: a reference names where the token is read."""
    workload: str
    bad_images: tuple[str, ...]
    good_images: tuple[str, ...]
    drill: bool = sparse(default=False)
    """A drill's proposal: on its own branch `drill/<incident>`, withdrawn by the roll-forward."""

    def describe(self) -> str:
        """Say which repository, file and images change, and how it reaches Git."""
        pairs = image_pairs(self.bad_images, self.good_images)
        images = "; ".join(f"{to.repository} {bad.point()} → {to.point()}" for bad, to in pairs)
        how = (
            f"a pull request into {self.source.branch} ({self.source.provider})"
            if self.source.change == "pull-request"
            else f"a commit on {self.source.branch}"
        )
        if self.drill:
            how = (
                f"a pull request from drill/<incident> into {self.source.branch} "
                f"({self.source.provider}) that is never merged"
                if self.source.change == "pull-request"
                else f"a commit on the branch drill/<incident>, never on {self.source.branch}"
            )
        way = (
            "revert the commit that introduced it, else edit"
            if self.source.how == "revert"
            else "edit"
        )
        return (
            f"After the rollback is verified, make Git name what {self.workload} runs: "
            f"{way} {self.source.path} in {self.source.repository} ({images}), as {how}"
        )

    def label(self) -> str:
        """Words for the progress message."""
        return f"Propose the Git change for {self.workload}"

    def run(self, ctx: StepContext) -> StepResult:
        """Propose the change; say where it is (the thread links the review)."""
        pairs = image_pairs(self.bad_images, self.good_images)
        if not pairs:
            return StepResult("the images did not change: nothing to propose in Git", skipped=True)
        token = self.source.token.read().get_secret_value() if self.source.token else None
        (bad, to), *others = pairs
        proposal = propose(
            self.source,
            to=to,
            bad=bad,
            also=[good for _, good in others],
            incident=ctx.incident_id,
            why=f"{self.workload} was rolled back from {bad.point()} to {to.point()} "
            f"by {ctx.incident_id}; Git must name what production runs before sync resumes.",
            token=token,
            forge=self.forge,
            drill=self.drill,
        )
        data: dict[str, Any] = {"already": proposal.already}
        if proposal.review is not None:
            data |= {"review_url": proposal.review.url, "review": proposal.review.number}
        if proposal.commit is not None:
            data |= {"commit": proposal.commit.sha, "branch": proposal.commit.branch}
        return StepResult(proposal.said(), data=data)


def access_findings(source: GitSource) -> list[Finding]:
    """Whether the configured token may push the change, asked of the provider before approval."""
    if source.change == "pull-request" and source.token is None:
        return [
            Finding(
                Level.RISKY,
                f"no token for {source.project_path}: the Git change will not be proposed",
                basis=f"git {source.repository} no token",
            )
        ]
    if source.provider is None or source.token is None:
        return []
    try:
        may = forge_for(source, source.token.read().get_secret_value()).may_push()
    except (ActionError, httpx.HTTPError, OSError, KeyError) as exc:
        return [
            Finding(
                Level.RISKY,
                f"cannot ask {source.provider} about {source.project_path}: {exc}",
                basis=f"git {source.repository} unreadable",
            )
        ]
    if may is False:
        return [
            Finding(
                Level.RISKY,
                f"the token cannot push to {source.project_path}: grant it contents and pull "
                "request write there, or the Git change will not be proposed",
                basis=f"git {source.repository} no push",
            )
        ]
    if may is None:
        text = f"{source.provider} does not say whether the token may push to {source.project_path}"
        return [Finding(Level.OK, text, basis=f"git {source.repository} push unknown")]
    return [
        Finding(
            Level.OK,
            f"the token may push to {source.project_path}: the Git change will be proposed",
            basis=f"git {source.repository} push",
        )
    ]
