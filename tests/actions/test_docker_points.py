"""Docker rollback points, pulls from a local registry and API version negotiation.

Against the session's private dockerd and Debian's docker-registry on a free
loopback port (tests/fakes/dockerd.py); dockerd treats 127.0.0.0/8 registries
as insecure by default, so pushes and pulls go over plain HTTP.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PermanentError, PlanningError, StepContext
from actions.docker import DockerClient, DockerParams, DockerTarget, negotiate
from actions.docker.auth import registry_auth, registry_of
from bot.domain.plans import default_point
from tests.fakes.docker_apps import (
    APP,
    app,
    build,
    load_fixed_time_image,
    params,
    push,
    swap,
    version_served,
)

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry

pytest_plugins = ["tests.fakes.dockerd", "tests.fakes.docker_apps"]


# -- pull -----------------------------------------------------------------------------------


def test_missing_image_is_pulled_from_the_registry_in_its_reference(
    dockerd: Engine, registry: Registry, docker_config: Path
) -> None:
    repo = f"{registry.address}/{APP}"
    push(dockerd, registry, "v9")
    build(dockerd, registry, "v2")
    name, port = app(dockerd, "v2", image_repo=repo)
    target = DockerTarget(params(dockerd, name, image=repo))
    plan = target.plan("v9")
    assert f"pulled from {registry.address} first" in plan.notes[0]
    assert "pulled first" in plan.rollback[0].describe()
    result = plan.rollback[0].run(StepContext.for_test(timeout=90))
    assert f"registry credentials: {registry.address} from {docker_config}" in result.output
    assert "pull: " in result.output and "Downloaded newer image" in result.output
    assert "pull-s3cret" not in result.output
    assert version_served(port) == "v9"
    assert dockerd.inspect(name)["Config"]["Image"] == f"{repo}:v9"


def test_failed_pull_changes_nothing(
    dockerd: Engine, registry: Registry, docker_config: Path
) -> None:
    repo = f"{registry.address}/{APP}"
    build(dockerd, registry, "v2")
    name, port = app(dockerd, "v2", image_repo=repo)
    old_id = dockerd.inspect(name)["Id"]
    step = DockerTarget(params(dockerd, name, image=repo)).plan("v404").rollback[0]
    with pytest.raises(PermanentError, match=r"pull of .*:v404 failed: .*nothing was changed"):
        step.run(StepContext.for_test(timeout=60))
    assert dockerd.inspect(name)["Id"] == old_id and version_served(port) == "v2"


def test_an_earlier_deployment_gone_from_the_host_is_offered_by_digest(
    dockerd: Engine, registry: Registry, docker_config: Path
) -> None:
    repo = f"{registry.address}/{APP}"
    digest = push(dockerd, registry, "v8")
    build(dockerd, registry, "v1")
    name, port = app(dockerd, "v1", image_repo=repo)
    swap(dockerd, name, "v8", image=repo)  # pulled: now the host knows its digest
    swap(dockerd, name, "v1", image=repo)
    dockerd.call("DELETE", f"/images/{repo}:v8", params={"force": "1"})
    points = DockerTarget(params(dockerd, name, image=repo)).points()
    by_digest = next(p for p in points if p.ref == digest)
    assert "by digest" in by_digest.label and by_digest.avoid.startswith("rolled back from")
    swap(dockerd, name, digest, image=repo)
    assert version_served(port) == "v8"


# -- points ---------------------------------------------------------------------------------


def test_points_of_a_container_the_bot_never_swapped(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    points = DockerTarget(params(dockerd, name)).points()
    assert points[0].ref == f"{APP}:v2" and points[0].is_current
    assert [p.ref for p in points[1:]][:1] == [f"{APP}:v1"]
    assert {p.ref for p in points[1:]} >= {f"{APP}:v1", f"{APP}:v3", f"{APP}:crash"}
    labels = {p.ref.rpartition(":")[2]: p.label for p in points}
    assert labels["v3"].endswith(" · a later version than the running one")
    assert labels["crash"].endswith(" · tagged after the running version")
    assert default_point(points) == points[1]


def test_points_follow_deployments_here_not_build_time(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v1")
    swap(dockerd, name, "v3")
    swap(dockerd, name, "v2")
    points = DockerTarget(params(dockerd, name)).points()
    assert [p.ref for p in points[:3]] == [f"{APP}:v2", f"{APP}:v3", f"{APP}:v1"]
    assert points[0].is_current and "running since" in points[0].label
    assert points[1].avoid.startswith("rolled back from") and not points[2].avoid
    assert "ran here until" in points[2].label
    assert default_point(points) == points[2]
    plan = DockerTarget(params(dockerd, name)).plan(None)
    assert plan.rollback[0].spec()["to_image"] == f"{APP}:v1"


def test_plan_without_any_other_version_says_what_to_do(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    target = DockerTarget(params(dockerd, name, image="rbt-lonely"))
    with pytest.raises(PlanningError, match="no earlier deployment or other local image"):
        target.plan(None)


# -- API version ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ({"ApiVersion": "1.41", "MinAPIVersion": "1.12"}, "1.41"),  # Debian's 20.10
        ({"ApiVersion": "1.52", "MinAPIVersion": "1.44"}, "1.47"),  # Docker 29: capped
        ({"ApiVersion": "1.45", "MinAPIVersion": "1.24"}, "1.45"),
    ],
)
def test_api_version_is_the_highest_both_sides_speak(engine: dict[str, Any], expected: str) -> None:
    assert negotiate(engine) == expected


def test_api_version_without_overlap_is_refused_clearly() -> None:
    with pytest.raises(PermanentError, match="no version in common; set api_version"):
        negotiate({"ApiVersion": "1.60", "MinAPIVersion": "1.50"})
    with pytest.raises(PermanentError, match="no version in common"):
        negotiate({"ApiVersion": "1.30", "MinAPIVersion": "1.12"})


def test_client_negotiates_with_the_real_engine_and_honours_an_override(dockerd: Engine) -> None:
    with DockerClient(dockerd.socket) as client:
        assert client.api_version == "1.41"
        assert client.container("rbt-no-such-container") is None
    with DockerClient(dockerd.socket, api_version="1.40") as client:
        assert client.api_version == "1.40"
        assert client.images(APP)
    with (
        DockerClient(dockerd.socket, api_version="1.99") as client,
        pytest.raises(PermanentError, match=r"1\.99"),
    ):
        client.images(APP)


def test_config_rejects_a_malformed_api_version() -> None:
    with pytest.raises(ValueError, match="api_version"):
        DockerParams(kind="docker", container="web", image="app", api_version="latest")


def test_config_rejects_timings_that_leave_no_room_to_switch_back() -> None:
    with pytest.raises(ValueError, match=r"settle .* must be shorter than health_timeout"):
        DockerParams(kind="docker", container="web", image="app", settle=60, health_timeout=30)
    with pytest.raises(ValueError, match=r"at least 150s"):
        DockerParams(
            kind="docker", container="web", image="app", health_timeout=120, swap_timeout=60
        )


# -- registry credentials ---------------------------------------------------------------------


def _decoded(header: str | None) -> dict[str, Any]:
    assert header is not None
    return dict(json.loads(base64.urlsafe_b64decode(header)))


def test_credentials_come_from_docker_auth_config_before_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"registry.example:5000": {"username": "file", "password": "f"}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"env-user:env-pass").decode()
    monkeypatch.setenv(
        "DOCKER_AUTH_CONFIG",
        json.dumps({"auths": {"https://registry.example:5000": {"auth": auth}}}),
    )
    header, source = registry_auth("registry.example:5000/team/app:v1")
    assert _decoded(header) == {
        "serveraddress": "registry.example:5000",
        "username": "env-user",
        "password": "env-pass",
    }
    assert source == "registry.example:5000 from DOCKER_AUTH_CONFIG"


def test_docker_hub_credentials_use_the_index_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"hub:token").decode()
    entry = {"https://index.docker.io/v1/": {"auth": auth}}
    (tmp_path / "config.json").write_text(json.dumps({"auths": entry}))
    header, _ = registry_auth("voxflow/api:v1")
    assert _decoded(header)["serveraddress"] == "https://index.docker.io/v1/"
    assert registry_of("localhost/app") == "localhost" and registry_of("app") == "docker.io"


def test_a_credential_helper_is_not_run_and_the_pull_is_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "desktop"}))
    header, source = registry_auth("ghcr.io/team/app:v1")
    assert header is None
    assert source == "none for ghcr.io, pulling anonymously (credential helpers are not run)"


# -- reproducible builds ----------------------------------------------------------------------


def test_images_with_one_fixed_build_time_still_give_a_previous_version(dockerd: Engine) -> None:
    repo = "rbt-fixed"
    load_fixed_time_image(dockerd, f"{repo}:v1", "v1")
    load_fixed_time_image(dockerd, f"{repo}:v2", "v2")
    for version in ("v1", "v2"):
        image = dockerd.call("GET", f"/images/{repo}:{version}/json").json()
        assert image["Created"].startswith("1980-01-01T00:00:01")
    name, port = app(dockerd, "v2", image_repo=repo)
    target = DockerTarget(params(dockerd, name, image=repo))
    assert [p.ref for p in target.points()] == [f"{repo}:v2", f"{repo}:v1"]
    plan = target.plan(None)
    assert plan.rollback[0].spec()["to_image"] == f"{repo}:v1"
    swap(dockerd, name, None, image=repo)
    assert version_served(port) == "v1"
