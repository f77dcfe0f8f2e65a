"""Real git: clone the source of a workload, change what names the version, push it.

Only the `git` command line is used (the same program people use by hand, so its
behaviour with hooks, protected branches and credentials is the real one). A token,
when one is configured, reaches git through `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`
environment variables as an `http.extraHeader` (git-config(1), "ENVIRONMENT"): never in
the remote URL, the command line or a file, so neither `ps` nor the clone's config
shows it. Nothing is ever force-pushed: the branch a proposal pushes is named after the
incident, so a resumed step finds its own earlier push and reuses it.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from actions.base import PermanentError, TemporaryError
from actions.children import run_child
from actions.git.edit import Change, ImageRef, set_image

GIT_TIMEOUT = 120.0
YAML_SUFFIXES = (".yaml", ".yml")
AUTHOR = ("rollback-bot", "rollback-bot@users.noreply.local")


class GitError(PermanentError):
    """git refused; the message is git's own last line."""


@dataclass(frozen=True)
class FileChange:
    """The changes made to one file of the repository."""

    path: str
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Commit:
    """What was committed and pushed, and where."""

    sha: str
    branch: str
    files: tuple[FileChange, ...]
    reused: bool = False
    """True when the branch already held this change (a resumed step)."""


@dataclass
class Git:
    """One clone of a repository, in a temporary directory removed afterwards."""

    url: str
    token: str | None = None
    timeout: float = GIT_TIMEOUT
    directory: Path = field(default_factory=Path)

    def environment(self) -> dict[str, str]:
        """The environment git runs in: no prompts, no user config, the token as a header."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory.parent),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": AUTHOR[0],
            "GIT_AUTHOR_EMAIL": AUTHOR[1],
            "GIT_COMMITTER_NAME": AUTHOR[0],
            "GIT_COMMITTER_EMAIL": AUTHOR[1],
            "LC_ALL": "C",
        }
        if self.token:
            basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            env |= {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        return env

    def run(self, *args: str, check: bool = True, cwd: Path | None = None) -> str:
        """Run `git args…` in the clone; return its standard output."""
        try:
            done = run_child(
                ["git", *args],
                cwd=cwd or self.directory,
                env=self.environment(),
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            raise TemporaryError(
                f"git {args[0]} gave no answer within {self.timeout:.0f} s"
            ) from None
        if check and done.returncode != 0:
            said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            if self.token:
                said = said.replace(self.token, "**********")
            raise GitError(f"git {args[0]}: {said}")
        return done.stdout

    def clone(self, branch: str) -> None:
        """Clone `branch` (enough history to find the commit that introduced a version)."""
        self.run(
            "clone", "--quiet", "--branch", branch, "--single-branch", "--depth", "200",
            "--", self.url, str(self.directory), cwd=self.directory.parent,
        )  # fmt: skip

    def remote_head(self, branch: str) -> str | None:
        """The commit `branch` points at on the remote, or None when it does not exist."""
        out = self.run("ls-remote", "--heads", "origin", f"refs/heads/{branch}")
        return out.split()[0] if out.strip() else None

    def head(self) -> str:
        return self.run("rev-parse", "HEAD").strip()


@contextmanager
def cloned(url: str, branch: str, *, token: str | None = None) -> Iterator[Git]:
    """A fresh clone of `branch`, removed when the block ends."""
    parent = Path(tempfile.mkdtemp(prefix="rollback-bot-git-"))
    try:
        git = Git(url, token, directory=parent / "repo")
        git.clone(branch)
        yield git
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def yaml_files(root: Path, under: str) -> list[Path]:
    """The YAML files at or below `under` (a file or a folder of the repository)."""
    start = (root / under).resolve()
    if root.resolve() not in (start, *start.parents):
        raise PermanentError(f"{under}: outside the repository")
    if start.is_file():
        return [start]
    if not start.is_dir():
        raise PermanentError(f"{under}: no such file or folder in the repository")
    return sorted(
        path
        for path in start.rglob("*")
        if path.suffix in YAML_SUFFIXES and ".git" not in path.relative_to(root).parts
    )


def edit_files(root: Path, under: str, *, to: ImageRef) -> list[FileChange]:
    """Point every reference to `to.repository` below `under` at `to`; return what changed."""
    changed = []
    for path in yaml_files(root, under):
        text = path.read_text(encoding="utf-8")
        new, changes = set_image(text, repository=to.repository, to=to)
        if changes:
            path.write_text(new, encoding="utf-8")
            changed.append(FileChange(str(path.relative_to(root)), tuple(changes)))
    return changed


def commit_and_push(
    git: Git,
    *,
    files: list[FileChange],
    message: str,
    branch: str,
    base: str,
) -> Commit:
    """Commit the edited files and push them to `branch` (a new branch, or `base` itself).

    A push to `base` that is refused because someone pushed first is a TemporaryError:
    the step clones again and re-applies the edit on the newer commit.
    """
    git.run("add", "--", *(change.path for change in files))
    git.run("commit", "--quiet", "--no-verify", "-m", message)
    sha = git.head()
    target = f"HEAD:refs/heads/{branch}"
    pushed = subprocess_push(git, target)
    if not pushed and branch == base:
        raise TemporaryError(f"{base} moved while the change was made; trying again")
    if not pushed:
        raise GitError(f"git push: {branch} exists with other commits; not overwritten")
    return Commit(sha, branch, tuple(files))


def subprocess_push(git: Git, target: str) -> bool:
    """Push without force; False when the remote refused a non-fast-forward."""
    try:
        git.run("push", "--quiet", "--porcelain", "origin", target)
    except GitError as exc:
        if "rejected" in str(exc) or "non-fast-forward" in str(exc) or "fetch first" in str(exc):
            return False
        raise
    return True


def introduced(git: Git, *, under: str, point: str) -> str | None:
    """The newest commit on the branch whose change to `under` added the text `point`."""
    out = git.run("log", "--format=%H", "-S", point, "--", under)
    return out.split()[0] if out.strip() else None


def branch_matches(git: Git, branch: str, files: Mapping[str, str]) -> bool:
    """Whether `branch` on the remote already holds each file with exactly this content."""
    head = git.remote_head(branch)
    if head is None:
        return False
    git.run("fetch", "--quiet", "--depth", "1", "origin", f"refs/heads/{branch}")
    for path, content in files.items():
        shown = git.run("show", f"{head}:{path}", check=False)
        if shown != content:
            return False
    return True
