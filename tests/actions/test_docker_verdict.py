"""The Docker target's verdict evidence against the real engine and Debian's docker-registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from actions.base import Level
from actions.docker import DockerTarget
from tests.fakes.docker_apps import app, build, params, push

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry

pytest_plugins = ["tests.fakes.dockerd", "tests.fakes.docker_apps"]


def test_an_image_on_the_host_is_runnable(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    findings = DockerTarget(params(dockerd, name)).evidence("v1")
    assert all(f.level == Level.OK for f in findings), findings
    assert any(f.text.startswith("target image at hand: rbt-app:v1 (") for f in findings)


def test_an_image_gone_from_host_and_registry_blocks(
    dockerd: Engine, registry: Registry, docker_config: Path
) -> None:
    repo = f"{registry.address}/rbt-app"
    build(dockerd, registry, "v2")
    name, _ = app(dockerd, "v2", image_repo=repo)
    blocked = [
        f.text
        for f in DockerTarget(params(dockerd, name, image=repo)).evidence("v405")
        if f.level == Level.BLOCKED
    ]
    assert blocked == [
        f"image cannot be pulled: {repo}:v405 is not in {registry.address} (manifest unknown) "
        f"(credentials from {docker_config})"
    ]


def test_an_image_only_in_the_registry_is_pullable(
    dockerd: Engine, registry: Registry, docker_config: Path
) -> None:
    repo = f"{registry.address}/rbt-app"
    push(dockerd, registry, "v41")
    build(dockerd, registry, "v2")
    name, _ = app(dockerd, "v2", image_repo=repo)
    findings = DockerTarget(params(dockerd, name, image=repo)).evidence("v41")
    assert [f.text for f in findings if f.level != Level.OK] == []
    assert (
        f"image {repo}:v41 is not on the host but pullable (credentials from {docker_config})"
        in [f.text for f in findings]
    )
