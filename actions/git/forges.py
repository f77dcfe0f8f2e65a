"""Pull requests on GitHub and merge requests on GitLab, through their REST APIs.

GitHub (github/rest-api-description, descriptions/api.github.com/api.github.com.yaml):
- `POST /repos/{owner}/{repo}/pulls` (operation pulls/create) with `title`, `head`,
  `base`, `body`: 201 and the pull request; 422 "Validation Failed" with an error
  `"A pull request already exists for owner:branch."` when one is open for that head and
  base, so a resumed step lists the open ones (`GET …/pulls?head=owner:branch&base=…`,
  pulls/list) and takes that one;
- `GET /repos/{owner}/{repo}/pulls/{pull_number}` (pulls/get): `state` open|closed,
  `merged`, `merge_commit_sha`, `mergeable` (null while GitHub computes it);
- `PATCH /repos/{owner}/{repo}/pulls/{pull_number}` (pulls/update) with `state: closed`
  closes it unmerged (a drill's pull request, withdrawn by its roll-forward);
- `GET /repos/{owner}/{repo}` (repos/get): `permissions` {pull, push, …} for the caller
  when the token is a user's; absent for an installation token, and then unknown;
- `Authorization: Bearer <token>`, `Accept: application/vnd.github+json`,
  `X-GitHub-Api-Version: 2022-11-28`; 401 "Bad credentials".

GitLab (doc/api/merge_requests.md, doc/api/projects.md):
- `POST /projects/:id/merge_requests` with `source_branch`, `target_branch`, `title`,
  `description`: 201 and the merge request (`iid`, `web_url`, `state` opened); 409 when
  one is open for that source branch, found again with
  `GET /projects/:id/merge_requests?source_branch=…&state=opened`;
- `GET /projects/:id/merge_requests/:iid`: `state` opened|closed|merged|locked,
  `merge_commit_sha`, `has_conflicts`, `detailed_merge_status` (`conflict` among others);
- `PUT /projects/:id/merge_requests/:iid` with `state_event: close` closes it unmerged;
- `PRIVATE-TOKEN: <token>`; `:id` is the URL-encoded `namespace/project`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from actions.base import PermanentError, TemporaryError

TIMEOUT = 15.0


class ReviewState(enum.StrEnum):
    """Where a proposed change stands."""

    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"
    """Closed without being merged."""


@dataclass(frozen=True)
class Review:
    """A pull or merge request as the forge reports it."""

    number: int
    url: str
    state: ReviewState
    merge_commit: str | None = None
    conflicts: bool = False


class Forge(Protocol):
    """A code host that takes a branch and opens a review of it."""

    name: str

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review: ...

    def get(self, number: int) -> Review: ...

    def find_open(self, *, branch: str, base: str) -> Review | None: ...

    def close(self, number: int) -> Review: ...

    def may_push(self) -> bool | None: ...


def _answer(response: httpx.Response, what: str) -> Any:
    """The JSON of a successful answer; errors that say what to do."""
    if response.status_code == 401:
        raise PermanentError(f"{what}: the token was refused (401): check the configured token")
    if response.status_code == 403:
        raise PermanentError(
            f"{what}: not allowed (403): the token needs contents and pull request write "
            "on this repository"
        )
    if response.status_code == 404:
        raise PermanentError(f"{what}: repository not found, or not visible to the token (404)")
    if response.status_code == 429 or response.status_code >= 500:
        raise TemporaryError(f"{what}: {response.status_code}, trying again", delay=5.0)
    if response.status_code >= 400:
        raise PermanentError(f"{what}: {response.status_code} {response.text[:200]}")
    return response.json()


class GitHub:
    """GitHub's pulls API for one repository (`owner/repo`)."""

    name = "GitHub"

    def __init__(self, *, api_url: str, repository: str, token: str) -> None:
        self.owner, _, self.repo = repository.partition("/")
        self.client = httpx.Client(
            base_url=api_url.rstrip("/"),
            timeout=TIMEOUT,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )

    def _review(self, pull: dict[str, Any]) -> Review:
        if pull.get("merged") or pull.get("merged_at"):
            state = ReviewState.MERGED
        elif pull.get("state") == "closed":
            state = ReviewState.CLOSED
        else:
            state = ReviewState.OPEN
        return Review(
            number=int(pull["number"]),
            url=str(pull["html_url"]),
            state=state,
            merge_commit=pull.get("merge_commit_sha") if state is ReviewState.MERGED else None,
            conflicts=pull.get("mergeable") is False,
        )

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        """Open a pull request of `branch` into `base`, or find the one already open."""
        path = f"/repos/{self.owner}/{self.repo}/pulls"
        response = self.client.post(
            path, json={"title": title, "head": branch, "base": base, "body": body}
        )
        if response.status_code == 422 and "already exists" in response.text:
            found = self.find_open(branch=branch, base=base)
            if found is not None:
                return found
        return self._review(_answer(response, "opening the pull request"))

    def find_open(self, *, branch: str, base: str) -> Review | None:
        """The pull request open for `branch` into `base`, if any."""
        path = f"/repos/{self.owner}/{self.repo}/pulls"
        listed = _answer(
            self.client.get(
                path, params={"head": f"{self.owner}:{branch}", "base": base, "state": "open"}
            ),
            "listing pull requests",
        )
        return self._review(listed[0]) if listed else None

    def close(self, number: int) -> Review:
        """Close the pull request without merging it."""
        path = f"/repos/{self.owner}/{self.repo}/pulls/{number}"
        return self._review(
            _answer(self.client.patch(path, json={"state": "closed"}), "closing the pull request")
        )

    def get(self, number: int) -> Review:
        """The pull request as it stands now."""
        path = f"/repos/{self.owner}/{self.repo}/pulls/{number}"
        return self._review(_answer(self.client.get(path), "reading the pull request"))

    def may_push(self) -> bool | None:
        """Whether the token may push here; None when GitHub does not say (an app's token)."""
        repo = _answer(
            self.client.get(f"/repos/{self.owner}/{self.repo}"), "reading the repository"
        )
        permissions = repo.get("permissions")
        return None if not isinstance(permissions, dict) else bool(permissions.get("push"))


class GitLab:
    """GitLab's merge requests API for one project (`group/project`)."""

    name = "GitLab"

    def __init__(self, *, api_url: str, repository: str, token: str) -> None:
        self.project = quote(repository, safe="")
        self.client = httpx.Client(
            base_url=api_url.rstrip("/"), timeout=TIMEOUT, headers={"PRIVATE-TOKEN": token}
        )

    def _review(self, request: dict[str, Any]) -> Review:
        state = {
            "merged": ReviewState.MERGED,
            "closed": ReviewState.CLOSED,
            "locked": ReviewState.OPEN,
        }.get(str(request.get("state")), ReviewState.OPEN)
        return Review(
            number=int(request["iid"]),
            url=str(request["web_url"]),
            state=state,
            merge_commit=request.get("merge_commit_sha") if state is ReviewState.MERGED else None,
            conflicts=bool(request.get("has_conflicts"))
            or request.get("detailed_merge_status") == "conflict",
        )

    def open(self, *, branch: str, base: str, title: str, body: str) -> Review:
        """Open a merge request of `branch` into `base`, or find the one already open."""
        path = f"/projects/{self.project}/merge_requests"
        response = self.client.post(
            path,
            json={
                "source_branch": branch,
                "target_branch": base,
                "title": title,
                "description": body,
            },
        )
        if response.status_code == 409:
            found = self.find_open(branch=branch, base=base)
            if found is not None:
                return found
        return self._review(_answer(response, "opening the merge request"))

    def find_open(self, *, branch: str, base: str) -> Review | None:
        """The merge request open from `branch` (into `base`), if any."""
        listed = _answer(
            self.client.get(
                f"/projects/{self.project}/merge_requests",
                params={"source_branch": branch, "state": "opened"},
            ),
            "listing merge requests",
        )
        into = [r for r in listed if r.get("target_branch") in (None, base)]
        return self._review(into[0]) if into else None

    def close(self, number: int) -> Review:
        """Close the merge request without merging it."""
        path = f"/projects/{self.project}/merge_requests/{number}"
        return self._review(
            _answer(
                self.client.put(path, json={"state_event": "close"}), "closing the merge request"
            )
        )

    def get(self, number: int) -> Review:
        """The merge request as it stands now."""
        path = f"/projects/{self.project}/merge_requests/{number}"
        return self._review(_answer(self.client.get(path), "reading the merge request"))

    def may_push(self) -> bool | None:
        """Whether the token may push: Developer (30) or more on the project."""
        project = _answer(self.client.get(f"/projects/{self.project}"), "reading the project")
        access = project.get("permissions") or {}
        levels = [
            (access.get(kind) or {}).get("access_level") or 0
            for kind in ("project_access", "group_access")
        ]
        return None if not access else max(levels) >= 30
