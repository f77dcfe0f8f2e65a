"""A deploy repository in real git: a bare one as the remote, a working clone as a developer's."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "dev",
        "GIT_AUTHOR_EMAIL": "dev@example.invalid",
        "GIT_COMMITTER_NAME": "dev",
        "GIT_COMMITTER_EMAIL": "dev@example.invalid",
        "HOME": str(cwd),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


class Deploy:
    """A deploy repository: a bare one as the remote, a working clone as a developer's."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.bare = root / "deploy.git"
        self.work = root / "work"
        run("git", "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        run("git", "clone", "--quiet", str(self.bare), str(self.work), cwd=root)
        run("git", "checkout", "--quiet", "-b", "main", cwd=self.work)
        self.commit(files, "initial deploy at v1.2.3")

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, files: dict[str, str], message: str) -> str:
        if self.head("main"):
            run("git", "pull", "--quiet", "--ff-only", "origin", "main", cwd=self.work)
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        run("git", "add", "-A", cwd=self.work)
        run("git", "commit", "--quiet", "-m", message, cwd=self.work)
        run("git", "push", "--quiet", "origin", "HEAD:main", cwd=self.work)
        return run("git", "rev-parse", "HEAD", cwd=self.work).strip()

    def head(self, branch: str) -> str | None:
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=self.bare,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or None

    def show(self, branch: str, path: str) -> str:
        return run("git", "show", f"{branch}:{path}", cwd=self.bare)

    def branches(self) -> list[str]:
        out = run("git", "for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=self.bare)
        return sorted(out.split())

    def release(self, name: str, text: str) -> str:
        """A developer's commit that deploys the bad version."""
        return self.commit({name: text}, "release v1.2.4")
