"""Stand-ins for GitHub's pulls API and GitLab's merge requests API over real bare repositories.

The repositories are real (`git init --bare`, pushed to with real git); only the review
API in front of them is a stand-in, and it follows the published descriptions, each rule
named beside the code:
- GitHub: github/rest-api-description descriptions/api.github.com/api.github.com.yaml,
  operations repos/get, pulls/create, pulls/list, pulls/get, pulls/update, pulls/merge;
- GitLab: gitlab-org/gitlab doc/api/merge_requests.md and doc/api/projects.md.
A merge is a real `git merge --no-ff` into the base branch, refused when it conflicts (as
both hosts refuse an unmergeable request), so what a test merges is what Git then says.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GIT_ENV = {
    "GIT_AUTHOR_NAME": "reviewer",
    "GIT_AUTHOR_EMAIL": "reviewer@example.invalid",
    "GIT_COMMITTER_NAME": "reviewer",
    "GIT_COMMITTER_EMAIL": "reviewer@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run git for the stand-in (never raises; callers read the return code)."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=False,
    )


@dataclass
class Pull:
    """One pull or merge request."""

    number: int
    head: str
    base: str
    title: str
    body: str
    state: str = "open"
    merged: bool = False
    merge_commit: str | None = None


@dataclass
class Repository:
    """A bare repository and the reviews opened on it."""

    path: Path
    pulls: list[Pull] = field(default_factory=list)

    def branch(self, name: str) -> str | None:
        done = git("rev-parse", "--verify", "--quiet", f"refs/heads/{name}", cwd=self.path)
        return done.stdout.strip() if done.returncode == 0 else None

    def mergeable(self, pull: Pull) -> bool:
        """Whether head merges into base without a conflict (`git merge-tree --write-tree`)."""
        done = git("merge-tree", "--write-tree", pull.base, pull.head, cwd=self.path)
        return done.returncode == 0

    def merge(self, pull: Pull) -> str | None:
        """Merge head into base with a merge commit; None on a conflict."""
        work = Path(tempfile.mkdtemp(prefix="forge-merge-"))
        try:
            if git("clone", "--quiet", "--branch", pull.base, str(self.path), str(work)).returncode:
                return None
            git("fetch", "--quiet", "origin", pull.head, cwd=work)
            message = f"Merge pull request #{pull.number} from {pull.head}"
            if git("merge", "--no-ff", "-m", message, "FETCH_HEAD", cwd=work).returncode:
                return None
            if git(
                "push", "--quiet", "origin", f"HEAD:refs/heads/{pull.base}", cwd=work
            ).returncode:
                return None
            return git("rev-parse", "HEAD", cwd=work).stdout.strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)


class Forges:
    """GitHub's and GitLab's review APIs for the repositories added, on one local port."""

    def __init__(self) -> None:
        self.repos: dict[str, Repository] = {}
        self.tokens: dict[str, dict[str, bool] | None] = {}
        """token -> GitHub permissions (None: an installation token, which GitHub does
        not answer permissions for)."""
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Forges:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, name: str, path: Path) -> Repository:
        """Serve reviews for the bare repository at `path` as `owner/repo`."""
        repo = self.repos[name] = Repository(path)
        return repo

    def grant(self, token: str, *, push: bool = True, permissions: bool = True) -> None:
        """Let `token` in; `push` is its write access; `permissions=False`: an app token."""
        self.tokens[token] = {"pull": True, "push": push, "admin": False} if permissions else None

    # The reviewer's side, as a person on the website would act.

    def merge(self, name: str, number: int) -> str | None:
        """Merge a review as a reviewer would; the merge commit, or None on a conflict."""
        with self.lock:
            repo = self.repos[name]
            pull = self._pull(repo, number)
            sha = repo.merge(pull)
            if sha is not None:
                pull.state, pull.merged, pull.merge_commit = "closed", True, sha
            return sha

    def close(self, name: str, number: int) -> None:
        """Close a review without merging it."""
        with self.lock:
            self._pull(self.repos[name], number).state = "closed"

    @staticmethod
    def _pull(repo: Repository, number: int) -> Pull:
        return next(p for p in repo.pulls if p.number == number)

    # The APIs.

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        forges = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with forges.lock:
                    forges.requests.append((self.command, self.path, body))
                    status, answer = forges.answer(
                        self.command, parts.path, query, body, dict(self.headers.items())
                    )
                self._send(status, answer)

            do_GET = do_POST = do_PUT = do_PATCH = _dispatch

        return Handler

    def answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[int, Any]:
        """Route a request to GitHub's or GitLab's rules."""
        if path.startswith("/api/v4/"):
            return self._gitlab(method, path.removeprefix("/api/v4"), query, body, headers)
        return self._github(method, path, query, body, headers)

    # GitHub: repos/get, pulls/create, pulls/list, pulls/get, pulls/update, pulls/merge.

    def _github(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[int, Any]:
        token = headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token not in self.tokens:
            return 401, {
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
            }
        permissions = self.tokens[token]
        found = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/pulls(?:/(\d+))?(/merge)?)?", path)
        if found is None or f"{found[1]}/{found[2]}" not in self.repos:
            return 404, {"message": "Not Found"}
        owner, name = found[1], f"{found[1]}/{found[2]}"
        repo = self.repos[name]
        if found[3] is None:
            return 200, _github_repository(name, permissions)
        writes = method in ("POST", "PUT", "PATCH")
        if writes and permissions is not None and not permissions.get("push"):
            return 403, {"message": "Resource not accessible by personal access token"}
        if found[4] is None and method == "POST":
            return self._github_create(name, owner, repo, body)
        if found[4] is None and method == "GET":
            return 200, self._github_list(name, repo, query)
        pull = next((p for p in repo.pulls if p.number == int(found[4])), None)
        if pull is None:
            return 404, {"message": "Not Found"}
        if found[5] and method == "PUT":
            return self._github_merge(repo, pull)
        if method == "PATCH" and body.get("state") in ("open", "closed") and not pull.merged:
            pull.state = str(body["state"])
        return 200, self._github_pull(name, repo, pull)

    def _github_create(
        self, name: str, owner: str, repo: Repository, body: dict[str, Any]
    ) -> tuple[int, Any]:
        head, base = str(body.get("head", "")), str(body.get("base", ""))
        head = head.split(":", 1)[-1]
        if repo.branch(head) is None or repo.branch(base) is None:
            field_name = "head" if repo.branch(head) is None else "base"
            return 422, {
                "message": "Validation Failed",
                "errors": [{"resource": "PullRequest", "field": field_name, "code": "invalid"}],
            }
        if any(p.head == head and p.base == base and p.state == "open" for p in repo.pulls):
            return 422, {
                "message": "Validation Failed",
                "errors": [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {owner}:{head}.",
                    }
                ],
            }
        pull = Pull(len(repo.pulls) + 1, head, base, str(body.get("title")), str(body.get("body")))
        repo.pulls.append(pull)
        return 201, self._github_pull(name, repo, pull)

    def _github_list(
        self, name: str, repo: Repository, query: dict[str, str]
    ) -> list[dict[str, Any]]:
        state = query.get("state", "open")
        head = query.get("head", "").split(":", 1)[-1]
        return [
            self._github_pull(name, repo, p)
            for p in repo.pulls
            if (state == "all" or p.state == state)
            and (not head or p.head == head)
            and (not query.get("base") or p.base == query["base"])
        ]

    def _github_merge(self, repo: Repository, pull: Pull) -> tuple[int, Any]:
        if pull.state != "open" or not repo.mergeable(pull):
            return 405, {"message": "Pull Request is not mergeable"}
        sha = repo.merge(pull)
        if sha is None:
            return 405, {"message": "Pull Request is not mergeable"}
        pull.state, pull.merged, pull.merge_commit = "closed", True, sha
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def _github_pull(self, name: str, repo: Repository, pull: Pull) -> dict[str, Any]:
        return {
            "number": pull.number,
            "html_url": f"https://github.com/{name}/pull/{pull.number}",
            "state": pull.state,
            "title": pull.title,
            "body": pull.body,
            "merged": pull.merged,
            "merged_at": "2026-12-07T00:00:00Z" if pull.merged else None,
            "merge_commit_sha": pull.merge_commit,
            "mergeable": None if pull.state != "open" else repo.mergeable(pull),
            "head": {"ref": pull.head, "sha": repo.branch(pull.head)},
            "base": {"ref": pull.base, "sha": repo.branch(pull.base)},
        }

    # GitLab: projects/:id, merge_requests create/list/get/update/merge.

    def _gitlab(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[int, Any]:
        token = headers.get("Private-Token") or headers.get("PRIVATE-TOKEN") or ""
        if token not in self.tokens:
            return 401, {"message": "401 Unauthorized"}
        found = re.fullmatch(r"/projects/([^/]+)(/merge_requests(?:/(\d+))?(/merge)?)?", path)
        name = unquote(found[1]) if found else ""
        if found is None or name not in self.repos:
            return 404, {"message": "404 Project Not Found"}
        repo = self.repos[name]
        permissions = self.tokens[token] or {}
        level = 30 if permissions.get("push") else 20
        if found[2] is None:
            return 200, _gitlab_project(name, level)
        if method in ("POST", "PUT") and level < 30:
            return 403, {"message": "403 Forbidden"}
        if found[3] is None and method == "POST":
            return self._gitlab_create(name, repo, body)
        if found[3] is None:
            return 200, self._gitlab_list(name, repo, query)
        pull = next((p for p in repo.pulls if p.number == int(found[3])), None)
        if pull is None:
            return 404, {"message": "404 Not found"}
        if found[4] and method == "PUT":
            return self._gitlab_merge(name, repo, pull)
        if method == "PUT" and body.get("state_event") == "close" and not pull.merged:
            pull.state = "closed"
        return 200, self._gitlab_request(name, repo, pull)

    def _gitlab_merge(self, name: str, repo: Repository, pull: Pull) -> tuple[int, Any]:
        sha = repo.merge(pull) if pull.state == "open" else None
        if sha is None:
            return 405, {"message": "405 Method Not Allowed"}
        pull.state, pull.merged, pull.merge_commit = "closed", True, sha
        return 200, self._gitlab_request(name, repo, pull)

    def _gitlab_create(self, name: str, repo: Repository, body: dict[str, Any]) -> tuple[int, Any]:
        head, base = str(body.get("source_branch")), str(body.get("target_branch"))
        open_one = next((p for p in repo.pulls if p.head == head and p.state == "open"), None)
        if open_one is not None:
            return 409, {
                "message": [
                    "Another open merge request already exists for this source branch: "
                    f"!{open_one.number}"
                ]
            }
        if repo.branch(head) is None or repo.branch(base) is None:
            return 400, {"message": "Invalid source or target branch"}
        pull = Pull(
            len(repo.pulls) + 1, head, base, str(body.get("title")), str(body.get("description"))
        )
        repo.pulls.append(pull)
        return 201, self._gitlab_request(name, repo, pull)

    def _gitlab_list(
        self, name: str, repo: Repository, query: dict[str, str]
    ) -> list[dict[str, Any]]:
        state = {"opened": "open", "closed": "closed", "merged": "merged"}.get(
            query.get("state", "")
        )
        return [
            self._gitlab_request(name, repo, p)
            for p in repo.pulls
            if (state is None or (p.state if not p.merged else "merged") == state)
            and (not query.get("source_branch") or p.head == query["source_branch"])
        ]

    def _gitlab_request(self, name: str, repo: Repository, pull: Pull) -> dict[str, Any]:
        state = "merged" if pull.merged else ("opened" if pull.state == "open" else "closed")
        # doc/api/merge_requests.md: `merge_status` (deprecated, can_be_merged |
        # cannot_be_merged) and `detailed_merge_status` (mergeable | conflict | not_open |
        # checking | ...); only the git side of mergeability is modelled here.
        conflicts = pull.state == "open" and not repo.mergeable(pull)
        detailed = "not_open" if pull.state != "open" else "conflict" if conflicts else "mergeable"
        return {
            "iid": pull.number,
            "web_url": f"https://gitlab.com/{name}/-/merge_requests/{pull.number}",
            "state": state,
            "title": pull.title,
            "description": pull.body,
            "source_branch": pull.head,
            "target_branch": pull.base,
            "merge_commit_sha": pull.merge_commit,
            "has_conflicts": conflicts,
            "merge_status": "cannot_be_merged" if conflicts else "can_be_merged",
            "detailed_merge_status": detailed,
        }


def _github_repository(name: str, permissions: dict[str, bool] | None) -> dict[str, Any]:
    """repos/get: the repository, with the token's permissions when it has a scope."""
    answer: dict[str, Any] = {"full_name": name, "default_branch": "main"}
    if permissions is not None:
        answer["permissions"] = permissions
    return answer


def _gitlab_project(name: str, level: int) -> dict[str, Any]:
    """projects/:id: the project, with the token's access level (30 developer, 20 reporter)."""
    return {
        "path_with_namespace": name,
        "permissions": {"project_access": {"access_level": level}, "group_access": None},
    }
