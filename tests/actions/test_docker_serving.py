"""A Docker version "runs" only when its container runs and its own healthcheck passes.

Against the session's private dockerd (tests/fakes/dockerd.py): images built here
`FROM rbt-app:v1` with a HEALTHCHECK that passes, fails, or has not run yet, in a
repository of their own so the rbt-app points other tests list stay as they were.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import RollbackPoint, running_point
from actions.docker import DockerParams, DockerTarget
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.dockerd"]

REPO = "rbt-checked"
CHECKS = {
    # --interval=200ms --retries=1: the first check decides
    "passes": 'HEALTHCHECK --interval=200ms --retries=1 CMD ["/bin/busybox", "true"]',
    "fails": 'HEALTHCHECK --interval=200ms --retries=1 CMD ["/bin/busybox", "sh", "-c", '
    '"echo no database; exit 1"]',
    # the first check runs an hour after start: the engine says `starting` until then
    "waits": 'HEALTHCHECK --interval=1h CMD ["/bin/busybox", "true"]',
    "none": "",
}


@pytest.fixture(scope="module")
def checked(dockerd: Engine) -> Engine:
    """Build `rbt-checked:<passes|fails|waits|none>` once for the module."""
    for tag, check in CHECKS.items():
        dockerd.build(f"{REPO}:{tag}", f"FROM rbt-app:v1\n{check}\n", {})
    return dockerd


def started(engine: Engine, tag: str, **body: Any) -> str:
    """Run `rbt-checked:<tag>` under a unique name; return the name."""
    name = f"rbt-{uuid.uuid4().hex[:8]}"
    engine.run(name, {"Image": f"{REPO}:{tag}", **body}, networks={engine.network(): {}})
    return name


def current(engine: Engine, name: str) -> RollbackPoint:
    """The running point of the container `name`, as the bot lists it."""
    params = DockerParams(kind="docker", container=name, image=REPO, socket=engine.socket)
    point = running_point(DockerTarget(params).points())
    assert point is not None
    return point


def health(engine: Engine, name: str) -> str:
    return str((engine.inspect(name)["State"].get("Health") or {}).get("Status"))


def test_a_container_healthy_by_its_healthcheck_runs_its_version(checked: Engine) -> None:
    name = started(checked, "passes")
    wait_for(lambda: health(checked, name) == "healthy", what="the first check to pass")
    point = current(checked, name)
    assert (point.version, point.unready) == (f"{REPO}:passes", "")


def test_a_container_unhealthy_by_its_healthcheck_does_not_run_its_version(
    checked: Engine,
) -> None:
    name = started(checked, "fails")
    wait_for(lambda: health(checked, name) == "unhealthy", what="the first check to fail")
    point = current(checked, name)
    assert point.version == f"{REPO}:fails"
    assert point.unready == (
        "its container is unhealthy by its own healthcheck (exit code 1: no database)"
    )


def test_a_container_whose_healthcheck_has_not_passed_yet_is_not_serving(
    checked: Engine,
) -> None:
    name = started(checked, "waits")
    assert health(checked, name) == "starting"
    assert (
        current(checked, name).unready == "its container's healthcheck is starting, not yet healthy"
    )


def test_an_exited_container_does_not_run_its_version_and_its_label_says_so(
    checked: Engine,
) -> None:
    name = started(checked, "none", Cmd=["sh", "-c", "exit 3"])
    wait_for(lambda: not checked.inspect(name)["State"]["Running"], what="the container to exit")
    point = current(checked, name)
    assert point.unready == "its container is exited, exit code 3"
    assert point.label.endswith(" · exited")


def test_a_running_container_without_a_healthcheck_runs_its_version(checked: Engine) -> None:
    name = started(checked, "none")
    wait_for(lambda: checked.inspect(name)["State"]["Running"], what="the container to run")
    point = current(checked, name)
    assert (point.version, point.unready) == (f"{REPO}:none", "")
