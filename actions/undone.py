"""What a rollback undoes: the changes between the version running and the one rolled back to.

A rollback takes away every change made since the version it goes back to, fixes
included. Teams that roll back often learned to look before approving: GitLab's rollback
check warns when a rollback would undo security fixes or another incident's fix. So
before approval the bot says which commits go away, found from what the images say of
themselves and from the repository they were built from:

- the OCI annotations of the image config's labels: `org.opencontainers.image.revision`
  (the commit) and `org.opencontainers.image.source` (the repository URL)
  (opencontainers/image-spec annotations.md, "Pre-Defined Annotation Keys");
- the commits in `git log <to>..<from>`: reachable from the running version and not from
  the one rolled back to, read from a clone of the source (or `repository` in the config);
- among them, security fixes: subjects or bodies matching the configured patterns
  (`CVE-…`, "security" by default), and the files changed in between that are
  migrations or configuration, by path.

Nothing is guessed: no label, no repository access, or a revision the clone does not
have is said as unknown, with the reason.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from actions.git.repo import Git, GitError
from actions.registry import Unreadable

REVISION = "org.opencontainers.image.revision"
SOURCE = "org.opencontainers.image.source"
SECURITY = (r"\bCVE-\d{4}-\d{4,}\b", r"(?i)\bsecurity\b", r"(?i)\bvulnerab")
MIGRATIONS = ("migrations/*", "*/migrations/*", "*.sql", "db/migrate/*")
CONFIGURATION = ("config/*", "*/config/*", "*.env", "*.ini", "*.toml", "*settings*")
SHOWN = 5


@dataclass(frozen=True)
class Undone:
    """The commits a rollback takes away, or why they cannot be known."""

    known: bool
    reason: str = ""
    commits: list[tuple[str, str]] = field(default_factory=list)
    """(sha, subject), newest first."""
    security: list[tuple[str, str]] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)
    configuration: list[str] = field(default_factory=list)
    link: str | None = None

    def said(self) -> str:
        """One paragraph for the plan, the form and the approval card."""
        if not self.known:
            return f"what this rollback undoes is unknown: {self.reason}"
        if not self.commits:
            return "this rollback undoes no commit"
        count = len(self.commits)
        lines = [f"undoes {count} commit{'s' * (count != 1)}"]
        lines += [f"{sha[:8]} {subject}" for sha, subject in self.commits[:SHOWN]]
        if count > SHOWN:
            lines.append(f"… and {count - SHOWN} more")
        if self.security:
            lines.append(
                "security fixes taken away: "
                + "; ".join(f"{sha[:8]} {subject}" for sha, subject in self.security)
            )
        if self.migrations:
            lines.append(f"migrations in between: {', '.join(self.migrations)}")
        if self.configuration:
            lines.append(f"configuration changed in between: {', '.join(self.configuration)}")
        if self.link:
            lines.append(self.link)
        return "\n".join(lines)

    @property
    def risky(self) -> list[str]:
        """The reasons this makes a verdict risky."""
        reasons = []
        if self.security:
            reasons.append(f"takes away {len(self.security)} security fix(es)")
        if self.migrations:
            reasons.append(f"undoes the code of {len(self.migrations)} migration file(s)")
        if self.configuration:
            reasons.append(f"undoes {len(self.configuration)} configuration change(s)")
        return reasons


def compare_link(source: str, base: str, head: str) -> str | None:
    """GitHub's and GitLab's compare page for a source URL, when it is one of theirs."""
    found = re.match(r"https://(github\.com|gitlab\.com)/(.+?)(?:\.git)?/?$", source)
    if found is None:
        return None
    middle = "/-/compare/" if found[1] == "gitlab.com" else "/compare/"
    return f"https://{found[1]}/{found[2]}{middle}{base}...{head}"


def undone(
    *,
    running: str,
    target: str,
    labels_of: Callable[[str], dict[str, str]],
    repository: str | None = None,
    token: str | None = None,
    security: Sequence[str] = SECURITY,
    migrations: Sequence[str] = MIGRATIONS,
    configuration: Sequence[str] = CONFIGURATION,
) -> Undone:
    """The commits between the `running` image and the `target` image rolled back to."""
    try:
        running_labels, target_labels = labels_of(running), labels_of(target)
    except Unreadable as exc:
        return Undone(known=False, reason=str(exc))
    head, base = running_labels.get(REVISION), target_labels.get(REVISION)
    for image, revision in ((running, head), (target, base)):
        if not revision:
            return Undone(known=False, reason=f"{image} has no {REVISION} label")
    assert head is not None and base is not None
    source = repository or running_labels.get(SOURCE) or target_labels.get(SOURCE)
    if not source:
        return Undone(known=False, reason=f"no {SOURCE} label and no repository in the config")
    parent = Path(tempfile.mkdtemp(prefix="rollback-bot-undone-"))
    try:
        git = Git(source, token, directory=parent / "repo.git")
        try:
            git.run("clone", "--quiet", "--bare", "--filter=blob:none", "--", source,
                    str(git.directory), cwd=parent)  # fmt: skip
        except GitError as exc:
            return Undone(known=False, reason=f"cannot read {source}: {exc}")
        for revision in (head, base):
            try:
                git.run("cat-file", "-e", f"{revision}^{{commit}}")
            except GitError:
                return Undone(known=False, reason=f"{source} has no commit {revision[:12]}")
        log = git.run("log", "--format=%H%x1f%s%x1f%b%x1e", f"{base}..{head}")
        # \x1e and \x1f count as white space to str.strip: strip line breaks only.
        commits = [
            entry.strip("\n").split("\x1f", 2) for entry in log.split("\x1e") if entry.strip("\n")
        ]
        changed = git.run("diff", "--name-only", base, head).split()
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    patterns = [re.compile(p) for p in security]
    return Undone(
        known=True,
        commits=[(sha, subject) for sha, subject, _ in commits],
        security=[
            (sha, subject)
            for sha, subject, body in commits
            if any(p.search(f"{subject}\n{body}") for p in patterns)
        ],
        migrations=[path for path in changed if any(fnmatch(path, g) for g in migrations)],
        configuration=[path for path in changed if any(fnmatch(path, g) for g in configuration)],
        link=compare_link(source, base, head),
    )
