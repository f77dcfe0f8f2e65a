"""GET /v1/targets/{environment}/{target}/versions/{version}: the regression guard for CI/CD.

Served by the production HTTP server (waitress) on SQLite and PostgreSQL, with the history
written as the runner writes it; asked with httpx, and with curl and jq as the README's
pipeline and Argo CD PreSync hook ask.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.versions import VersionBook
from tests.fakes.config import BOB
from tests.fakes.guard import GuardedBot, guarded_bot
from tests.fakes.history import rolled

TOKEN = "guard-token-1"
V124, V125 = "registry.example/voxflow/api:v1.2.4", "registry.example/voxflow/api:v1.2.5"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def bot(database_url: str) -> Iterator[GuardedBot]:
    with guarded_bot(database_url, token=TOKEN) as served:
        yield served


@pytest.fixture
def incident(bot: GuardedBot) -> Run:
    """v1.2.5 rolled back to v1.2.4 in an incident."""
    workflow: Workflow = bot.process.runner.workflow
    return rolled(workflow, away=V125, to=V124)


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers or AUTH, timeout=30)


def test_a_version_rolled_away_from_is_bad_with_the_reason_and_the_incident(
    bot: GuardedBot, incident: Run
) -> None:
    response = get(bot.url("prod", "app", "v1.2.5"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert {k: body[k] for k in ("environment", "target", "version", "verdict", "deploy")} == {
        "environment": "prod",
        "target": "app",
        "version": "v1.2.5",
        "verdict": "bad",
        "deploy": False,
    }
    assert body["incident"] == incident.incident_id and body["stored_version"] == V125
    assert body["reason"] == f"rolled back from in {incident.incident_id}; not cleared"
    assert body["since"] and body["cleared_by"] is None


def test_the_version_is_the_rest_of_the_path_slashes_and_all(
    bot: GuardedBot, incident: Run
) -> None:
    assert get(bot.url("prod", "app", V125)).json()["verdict"] == "bad"
    encoded = V125.replace("/", "%2F").replace(":", "%3A")
    assert get(bot.url("prod", "app", encoded)).json()["verdict"] == "bad"
    assert get(bot.url("prod", "app", V124)).json()["verdict"] == "ok"
    unknown = get(bot.url("prod", "app", "v9.9.9")).json()
    assert unknown["verdict"] == "unknown" and unknown["deploy"] is True


def test_a_cleared_version_is_ok_and_says_who_cleared_it_and_why(
    bot: GuardedBot, incident: Run
) -> None:
    book = VersionBook(bot.process.store)
    bad = [m for m in book.marks(environment="prod", target="app") if m.bad]
    book.clear(bad, by=BOB, reason="fixed in v1.2.6")
    body = get(bot.url("prod", "app", "v1.2.5")).json()
    assert (body["verdict"], body["deploy"], body["cleared_by"]) == ("ok", True, BOB)
    assert body["cleared_reason"] == "fixed in v1.2.6" and body["cleared_at"]
    assert body["incident"] == incident.incident_id


def test_fail_asks_for_409_on_the_verdicts_a_pipeline_refuses(
    bot: GuardedBot, incident: Run
) -> None:
    bad = get(bot.url("prod", "app", "v1.2.5?fail=bad"))
    assert bad.status_code == 409 and bad.json()["verdict"] == "bad"
    assert get(bot.url("prod", "app", "v1.2.4?fail=bad")).status_code == 200
    assert get(bot.url("prod", "app", "v9?fail=bad")).status_code == 200
    assert get(bot.url("prod", "app", "v9?fail=bad,unknown")).status_code == 409
    wrong = get(bot.url("prod", "app", "v1.2.5?fail=ok"))
    assert wrong.status_code == 400 and "fail= takes bad and unknown, not ok" in wrong.text
    other = get(bot.url("prod", "app", "v1.2.5?strict=1"))
    assert other.status_code == 400 and "unknown query parameter 'strict'" in other.text


@pytest.mark.parametrize(
    ("headers", "shown"),
    [({"Authorization": "Bearer guess"}, "wrong"), ({}, "none"), ({"X-Token": TOKEN}, "other")],
)
def test_without_the_right_bearer_token_the_answer_is_401_and_says_nothing(
    bot: GuardedBot, incident: Run, headers: dict[str, str], shown: str
) -> None:
    response = httpx.get(bot.url("prod", "app", "v1.2.5"), headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong bearer token"}
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("environment", "target", "status", "error"),
    [
        ("qa", "app", 404, "unknown environment 'qa' (known: prod)"),
        ("prod", "api", 404, "unknown target 'api' in prod (known: app, db, full)"),
        ("prod", "full", 404, "full in prod is a group of targets (db, app)"),
    ],
)
def test_an_unknown_environment_or_target_is_404_naming_the_known_ones(
    bot: GuardedBot, environment: str, target: str, status: int, error: str
) -> None:
    response = get(bot.url(environment, target, "v1.2.5"))
    assert response.status_code == status
    assert error in response.json()["error"]


@pytest.mark.parametrize("version", ["v1.2.5;rm", "v1.2.5%20x", "%00", "a" * 1001, "-v1"])
def test_a_malformed_version_is_400_saying_why(bot: GuardedBot, version: str) -> None:
    response = get(bot.url("prod", "app", version))
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed version: ")


def test_a_path_not_of_the_api_shape_is_404(bot: GuardedBot) -> None:
    for path in ("/v1/targets/prod/app", "/v1/targets/prod/app/revisions/1", "/v1/targets/"):
        response = get(bot.base + path)
        assert response.status_code == 404
        assert "GET /v1/targets/<environment>/<target>/versions/<version>" in response.text


def test_a_method_other_than_get_is_405_and_changes_nothing(bot: GuardedBot, incident: Run) -> None:
    book = VersionBook(bot.process.store)
    before = book.marks(environment="prod", target="app")
    for method in ("POST", "PUT", "DELETE"):
        response = httpx.request(method, bot.url("prod", "app", "v1.2.5"), headers=AUTH)
        assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert book.marks(environment="prod", target="app") == before


def test_without_a_token_configured_the_api_is_off(database_url: str) -> None:
    with guarded_bot(database_url, token="") as bot:
        for headers in ({"Authorization": "Bearer"}, {"Authorization": "Bearer x"}, {}):
            response = httpx.get(bot.url("prod", "app", "v1"), headers=headers, timeout=30)
            assert response.status_code == 404
            assert response.json() == {"error": "guard API disabled: set GUARD_API_TOKEN"}


def _sh(shell: str, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shell, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


def _readme_blocks(language: str) -> list[str]:
    text = (Path(__file__).parents[2] / "README.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


CI_STEP = next(b for b in _readme_blocks("bash") if "curl" in b)
"""The README's CI step, as written there."""
PRESYNC_JOB = next(
    yaml.safe_load(b) for b in _readme_blocks("yaml") if "argocd.argoproj.io/hook" in b
)
PRESYNC = PRESYNC_JOB["spec"]["template"]["spec"]["containers"][0]["args"][0]
"""The README's Argo CD PreSync hook's command, as written there (run by `sh -c`)."""


def test_the_readmes_presync_hook_is_a_job_argo_cd_runs_before_syncing() -> None:
    assert PRESYNC_JOB["kind"] == "Job"
    annotations = PRESYNC_JOB["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
    container = PRESYNC_JOB["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"] and "?fail=bad" in PRESYNC


@pytest.mark.parametrize(
    ("shell", "script"), [("bash", CI_STEP), ("sh", PRESYNC)], ids=["ci-jq", "presync-curl"]
)
def test_the_readmes_pipeline_steps_fail_on_a_bad_version_only(
    bot: GuardedBot, incident: Run, shell: str, script: str
) -> None:
    env = {"PATH": "/usr/bin:/bin", "BOT_URL": bot.base, "GUARD_API_TOKEN": TOKEN}
    refused = _sh(shell, script, **env, VERSION=V125)
    assert refused.returncode != 0
    assert incident.incident_id in refused.stdout + refused.stderr
    assert _sh(shell, script, **env, VERSION="v1.2.4").returncode == 0
    assert _sh(shell, script, **env, VERSION="v1.3.0").returncode == 0
    # a wrong token never reads as permission
    assert (
        _sh(shell, script, **{**env, "GUARD_API_TOKEN": "guess"}, VERSION="v1.3.0").returncode != 0
    )
