"""Propose the change that makes Git name what production runs after a rollback.

One call does the whole of it, and can be called again after a crash at any point: the
branch is named after the incident, a branch that already holds the same files is reused
rather than pushed again, and a review already open for it is found rather than opened
twice. With `how: revert`, the commit that introduced the bad version is reverted when
that reverts cleanly and leaves Git naming exactly the version rolled back to; otherwise
(a conflict, or a revert that would also undo other changes to the image) the tag is edited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actions.base import PermanentError
from actions.git.edit import Change, ImageRef, set_image
from actions.git.forges import Forge, GitHub, GitLab, Review
from actions.git.params import GitSource
from actions.git.repo import (
    Commit,
    FileChange,
    Git,
    GitError,
    branch_matches,
    cloned,
    commit_and_push,
    edit_files,
    introduced,
    subprocess_push,
    yaml_files,
)


@dataclass(frozen=True)
class Proposal:
    """What the bot changed in Git, and the review that carries it (None: committed directly)."""

    commit: Commit | None
    review: Review | None
    already: bool = False
    """Git already named the version: nothing to change."""
    reverted: str | None = None
    """The commit reverted, with `how: revert`."""

    def said(self) -> str:
        """One line for the thread."""
        if self.already:
            return "Git already names the version production runs: nothing to change"
        assert self.commit is not None
        files = ", ".join(
            f"{change.path}:{line.line}" for change in self.commit.files for line in change.changes
        )
        how = f"reverted {self.reverted[:12]}" if self.reverted else f"changed {files}"
        if self.review is not None:
            return f"{how}; review: {self.review.url}"
        return f"{how}; committed {self.commit.sha[:12]} to {self.commit.branch}"


def forge_for(source: GitSource, token: str) -> Forge:
    """The provider's API client for the source's project."""
    kind = GitHub if source.provider == "github" else GitLab
    return kind(api_url=source.api, repository=source.project_path, token=token)


DRILL_BRANCH = "drill/"
"""The prefix of a drill's branch: a drill never pushes to the base (`actions.git.drill`)."""


def branch_for(source: GitSource, incident: str, *, drill: bool = False) -> str:
    """Where the change is pushed: the incident's own branch, or the base itself; a drill's
    always its own branch, whatever `change` says."""
    if drill:
        return f"{DRILL_BRANCH}{incident.lower()}"
    return source.branch if source.change == "commit" else f"rollback/{incident.lower()}"


def propose(
    source: GitSource,
    *,
    to: ImageRef,
    bad: ImageRef,
    incident: str,
    why: str,
    token: str | None = None,
    forge: Forge | None = None,
    also: Sequence[ImageRef] = (),
    drill: bool = False,
) -> Proposal:
    """Make Git name `to` instead of `bad` under `source.path`, as the source says to.

    `also`: the workload's other images to name as they run now, in the same commit (a
    sidecar rolled back with the app). `drill`: on the drill's own branch, never the base;
    the review (with `change: pull-request`) says not to merge it."""
    branch = branch_for(source, incident, drill=drill)
    title = f"Roll back {to.repository} to {to.point()} ({incident})"
    if drill:
        title = f"Drill, do not merge: {title}"
    message = f"{title}\n\n{why}\n\nProduction was rolled back from {bad.point()} by {incident}."
    with cloned(source.repository, source.branch, token=token) as git:
        reverted = None
        if source.how == "revert" and not also:
            reverted = _revert(git, source=source, to=to, bad=bad, message=message)
        if reverted is None:
            files = _merged(
                [edit_files(git.directory, source.path, to=image) for image in (to, *also)]
            )
            if not files:
                if _names(git, source, to):
                    return Proposal(commit=None, review=None, already=True)
                raise PermanentError(
                    f"no YAML file under {source.path} in {source.repository} names "
                    f"{to.repository} with a tag or digest: say the file with `path`"
                )
            contents = {f.path: (git.directory / f.path).read_text() for f in files}
            if branch != source.branch and branch_matches(git, branch, contents):
                commit = Commit(git.remote_head(branch) or "", branch, tuple(files), reused=True)
            else:
                commit = commit_and_push(
                    git, files=files, message=message, branch=branch, base=source.branch
                )
        else:
            commit = _push_revert(git, source=source, branch=branch)
    review = None
    if source.change == "pull-request":
        body = f"{why}\n\nOpened by rollback-bot for {incident}."
        if drill:
            body += " A drill: the bot closes it unmerged when the drill rolls forward."
        review = _forge(source, token, forge).open(
            branch=branch, base=source.branch, title=title, body=body
        )
    return Proposal(commit=commit, review=review, reverted=reverted)


def _forge(source: GitSource, token: str | None, forge: Forge | None) -> Forge:
    """The forge given, else the source's provider's API with the token."""
    if forge is not None:
        return forge
    if token is None:
        raise PermanentError("a pull request needs a token for the provider's API")
    return forge_for(source, token)


def _merged(edits: list[list[FileChange]]) -> list[FileChange]:
    """One entry per file, its changes from every image in line order."""
    by_path: dict[str, list[Change]] = {}
    for changes in edits:
        for change in changes:
            by_path.setdefault(change.path, []).extend(change.changes)
    return [
        FileChange(path, tuple(sorted(lines, key=lambda c: c.line)))
        for path, lines in by_path.items()
    ]


def _names(git: Git, source: GitSource, to: ImageRef) -> bool:
    """Whether the path refers to `to.repository` at all (the edit found it already at `to`)."""
    probe = ImageRef(to.repository, tag="rollback-bot-probe")
    for path in yaml_files(git.directory, source.path):
        _, found = set_image(path.read_text(encoding="utf-8"), repository=to.repository, to=probe)
        if found:
            return True
    return False


def _revert(
    git: Git, *, source: GitSource, to: ImageRef, bad: ImageRef, message: str
) -> str | None:
    """Revert the commit that introduced `bad`, when that leaves exactly `to`; else None."""
    sha = introduced(git, under=source.path, point=bad.point())
    if sha is None:
        return None
    try:
        git.run("revert", "--no-edit", "--no-commit", sha)
    except GitError:
        git.run("revert", "--abort", check=False)
        git.run("reset", "--hard", "--quiet", "HEAD")
        return None
    # The revert must leave nothing to edit: Git names `to` and no longer `bad`.
    left = edit_files(git.directory, source.path, to=to)
    if left:
        git.run("reset", "--hard", "--quiet", "HEAD")
        return None
    git.run("commit", "--quiet", "--no-verify", "-m", f"Revert {sha[:12]}\n\n{message}")
    return sha


def _push_revert(git: Git, *, source: GitSource, branch: str) -> Commit:
    files = git.run("diff", "--name-only", "HEAD~1", "HEAD").split()
    if not subprocess_push(git, f"HEAD:refs/heads/{branch}"):
        raise GitError(f"git push: {branch} exists with other commits; not overwritten")
    return Commit(git.head(), branch, tuple(FileChange(path, ()) for path in files))
