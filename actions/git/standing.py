"""Where the proposed Git change stands, read while sync is held after a rollback.

One read answers everything the hold decides on (`bot.execution.hold`):

- the review: open, merged or closed unmerged, and whether it conflicts with its base
  (GitHub's `mergeable: false`, GitLab's `has_conflicts` / `detailed_merge_status:
  conflict`); a direct commit has landed when it is an ancestor of the branch's head;
- what Git names at the branch's head, rendered as the reconciler renders it
  (`actions.git.desired`): the hold ends only when that is exactly what runs;
- the commits on the branch since the hold began that name the bad version again
  (their diff under the source's path adds a line naming it), each announced once.

A fresh shallow clone per read: the hold polls once a minute, and a clone of a deploy
repository is small; nothing is kept between reads but what the hold records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

from actions.base import TemporaryError
from actions.git.desired import desired
from actions.git.edit import ImageRef
from actions.git.forges import Forge, Review, ReviewState
from actions.git.params import GitSource
from actions.git.propose import forge_for
from actions.git.repo import Git, GitError, cloned


@dataclass(frozen=True)
class BadCommit:
    """A commit on the branch that names the bad version again."""

    sha: str
    subject: str


@dataclass(frozen=True)
class Standing:
    """The proposal and the branch, as they are now."""

    head: str
    """The branch's head commit when read."""
    review: Review | None
    landed: bool
    """Merged (a review), or on the branch (a direct commit)."""
    named: dict[str, list[str]]
    """Per image repository, what Git names at the head."""
    bad_commits: tuple[BadCommit, ...] = field(default=())

    @property
    def closed(self) -> bool:
        """The review was closed without being merged."""
        return self.review is not None and self.review.state is ReviewState.CLOSED

    @property
    def conflicts(self) -> bool:
        """The review is open and cannot be merged as it is."""
        return (
            self.review is not None
            and self.review.state is ReviewState.OPEN
            and self.review.conflicts
        )

    def names(self, images: tuple[str, ...]) -> bool:
        """Whether Git names exactly these images (each repository once, at this version)."""
        for image in images:
            ref = ImageRef.parse(image)
            if self.named.get(ref.repository) != [str(ref)]:
                return False
        return True

    def said(self, repositories: tuple[str, ...]) -> str:
        """`voxflow/api:v2` or `voxflow/api: nothing` per repository, for the thread."""
        parts = []
        for image in repositories:
            repository = ImageRef.parse(image).repository
            named = self.named.get(repository) or []
            parts.append(", ".join(named) if named else f"{repository}: not named")
        return "; ".join(parts)


def read_standing(
    source: GitSource,
    *,
    review: int | None,
    commit: str | None,
    bad: tuple[str, ...],
    good: tuple[str, ...],
    since: str | None,
    token: str | None = None,
    forge: Forge | None = None,
) -> Standing:
    """Read the review and the branch; `since`: the head the hold began at (None: now)."""
    found = None
    if review is not None:
        if forge is None:
            forge = forge_for(source, token or "")
        try:
            found = forge.get(review)
        except httpx.HTTPError as exc:
            raise TemporaryError(f"review {review} could not be read: {exc}") from exc
    repositories = {ImageRef.parse(image).repository for image in (*bad, *good)}
    with cloned(source.repository, source.branch, token=token) as git:
        head = git.head()
        landed = found.state is ReviewState.MERGED if found is not None else _on_branch(git, commit)
        named = desired(git.directory, source.path, repositories)
        again = _naming_again(git, source.path, bad, since) if since else ()
    return Standing(head, found, landed, named, again)


def _on_branch(git: Git, commit: str | None) -> bool:
    if not commit:
        return False
    try:
        git.run("merge-base", "--is-ancestor", commit, "HEAD")
    except GitError:
        return False  # not an ancestor (exit 1), or not in the clone at all
    return True


def _naming_again(git: Git, path: str, bad: tuple[str, ...], since: str) -> tuple[BadCommit, ...]:
    """The commits after `since` whose change under `path` adds a line naming a bad version."""
    if git.run("cat-file", "-t", since, check=False).strip() != "commit":
        return ()  # beyond the clone's depth, or rewritten away: nothing to compare with
    points = [ImageRef.parse(image).point() for image in bad]
    patterns = [re.compile(rf"(?<![\w.-]){re.escape(point)}(?![\w.-])") for point in points]
    found = []
    log = git.run("log", "--no-merges", "--format=%H%x09%s", f"{since}..HEAD", "--", path)
    for line in log.splitlines():
        sha, _, subject = line.partition("\t")
        diff = git.run("show", "--format=", "--unified=0", sha, "--", path)
        added = [
            text[1:]
            for text in diff.splitlines()
            if text.startswith("+") and not text.startswith("+++")
        ]
        if any(pattern.search(text) for pattern in patterns for text in added):
            found.append(BadCommit(sha, subject))
    return tuple(reversed(found))
