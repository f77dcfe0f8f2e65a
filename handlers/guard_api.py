"""The regression guard over HTTP: may this version of this target be deployed?

    GET /v1/targets/{environment}/{target}/versions/{version}[?fail=bad[,unknown]]
    Authorization: Bearer <GUARD_API_TOKEN>

For a CI/CD job or an Argo CD PreSync hook to ask before it deploys (Shipit and Kargo
keep a rolled-back version from being promoted again; `bot.application.guard` keeps the
rule). `{version}` is the rest of the path: the version as the bot keeps it, one of its
images (`registry.example/voxflow/api:v1.2.5`, slashes and all) or just a tag or digest.

The answer is JSON (`GuardAnswer.as_json`): `verdict` is `bad` (rolled away from in
`incident` and not cleared), `ok` (verified healthy, or cleared by `cleared_by` with
`cleared_reason`) or `unknown` (never rolled to or from: every new version), and `deploy`
is false only for `bad`. It is 200 whatever the verdict, unless the caller asks with
`?fail=bad` (or `fail=bad,unknown`) for 409 Conflict on those verdicts, so that
`curl --fail-with-body` alone decides a pipeline step, its body saying why.

Everything else is an error a pipeline must not read as permission: 404 when no token is
configured (the API is off) or the environment or target is unknown, 401 without the
right bearer token, 405 for a method other than GET, 400 for a malformed
version or query. Nothing here writes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from bot.application.guard import Guard
from bot.config import UnknownTarget
from bot.domain.versions import MalformedVersion, Verdict

PREFIX = "/v1/targets/"
SHAPE = "GET /v1/targets/<environment>/<target>/versions/<version>"
Answer = tuple[str, dict[str, Any]]


class GuardApi:
    """A WSGI endpoint answering the regression guard for pipelines."""

    def __init__(self, guard: Guard, *, token: str) -> None:
        self.guard = guard
        self.token = token

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status, body = self.handle(environ)
        data = (json.dumps(body, indent=1) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        if status.startswith("401"):
            headers.append(("WWW-Authenticate", 'Bearer realm="rollback-bot guard"'))
        if status.startswith("405"):
            headers.append(("Allow", "GET"))
        start_response(status, headers)
        return [data]

    def handle(self, environ: dict[str, Any]) -> Answer:
        """Answer one request: (HTTP status line, JSON body)."""
        if not self.token:
            return "404 Not Found", {"error": "guard API disabled: set GUARD_API_TOKEN"}
        if environ.get("REQUEST_METHOD") != "GET":
            return "405 Method Not Allowed", {"error": f"only {SHAPE} is answered here"}
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return "401 Unauthorized", {"error": "missing or wrong bearer token"}
        path = str(environ.get("PATH_INFO", ""))
        parts = path.removeprefix(PREFIX).split("/", 3)
        if not path.startswith(PREFIX) or len(parts) != 4 or parts[2] != "versions":
            return "404 Not Found", {"error": f"no such endpoint: use {SHAPE}"}
        try:
            fail = _fail_on(str(environ.get("QUERY_STRING", "")))
        except ValueError as exc:
            return "400 Bad Request", {"error": str(exc)}
        environment, target, _, version = parts
        return self._ask(environment, target, version, fail)

    def _ask(self, environment: str, target: str, version: str, fail: set[Verdict]) -> Answer:
        try:
            answer = self.guard.ask(environment=environment, target=target, version=version)
        except UnknownTarget as exc:
            return "404 Not Found", {"error": str(exc)}
        except MalformedVersion as exc:
            return "400 Bad Request", {"error": f"malformed version: {exc}"}
        status = "409 Conflict" if answer.verdict in fail else "200 OK"
        return status, answer.as_json()


def _fail_on(query: str) -> set[Verdict]:
    """The verdicts the caller wants answered 409 (`fail=bad,unknown`); ValueError if unknown."""
    try:
        asked = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"malformed query string {query[:80]!r}") from None
    unknown = sorted(set(asked) - {"fail"})
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0]!r}: only fail=bad[,unknown]")
    words = {w for value in asked.get("fail", []) for w in value.split(",")}
    allowed = {Verdict.BAD.value, Verdict.UNKNOWN.value}
    if not words <= allowed:
        raise ValueError(f"fail= takes bad and unknown, not {', '.join(sorted(words - allowed))}")
    return {Verdict(w) for w in words}
