"""Where a workload's desired state lives in Git, and how the bot may change it."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import model_validator

from actions.params import SecretRef, Strict

DEFAULT_API = {"github": "https://api.github.com", "gitlab": "https://gitlab.com/api/v4"}


class GitSource(Strict):
    """The repository, branch and path that name the workload's image.

    `change: pull-request` pushes a branch `rollback/<incident>` and opens a pull request
    (GitHub) or merge request (GitLab); `change: commit` commits to `branch` directly.
    The token needs contents and pull request write on this repository only.
    """

    repository: str
    """The clone URL (https://…/org/deploy.git)."""
    branch: str = "main"
    path: str = "."
    """The file or folder that names the image: a manifest, a kustomization, Helm values."""
    change: Literal["pull-request", "commit"] = "pull-request"
    how: Literal["edit", "revert"] = "edit"
    """`revert`: `git revert` the commit that introduced the bad version, when it reverts
    cleanly to exactly the version rolled back to; otherwise the tag is edited."""
    provider: Literal["github", "gitlab"] | None = None
    project: str | None = None
    """`owner/repo` on the provider; by default the repository URL's path."""
    api_url: str | None = None
    token: SecretRef | None = None

    @model_validator(mode="after")
    def _provider_for_reviews(self) -> GitSource:
        if self.change == "pull-request" and self.provider is None:
            raise ValueError("change: pull-request needs provider: github or gitlab")
        return self

    @property
    def project_path(self) -> str:
        """`owner/repo` on the provider."""
        if self.project:
            return self.project
        path = urlsplit(self.repository).path.strip("/")
        return path.removesuffix(".git")

    @property
    def api(self) -> str:
        """The provider's API root."""
        return self.api_url or DEFAULT_API[self.provider or "github"]


class ChangeSource(Strict):
    """Where the commits between two versions are read, to say what a rollback undoes.

    By default each image's `org.opencontainers.image.source` label names the repository;
    `repository` overrides it (a mirror the bot may read). Commits whose subject or body
    match `security` are security fixes; files matching `migrations` or `configuration`
    changed in between are named. Any of them makes the verdict risky.
    """

    repository: str | None = None
    token: SecretRef | None = None
    security: list[str] = [r"\bCVE-\d{4}-\d{4,}\b", r"(?i)\bsecurity\b", r"(?i)\bvulnerab"]
    migrations: list[str] = ["migrations/*", "*/migrations/*", "*.sql", "db/migrate/*"]
    configuration: list[str] = ["config/*", "*/config/*", "*.env", "*.ini", "*.toml"]
