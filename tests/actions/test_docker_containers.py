"""Containers as a fleet runs them: `--rm`, anonymous `--mount` volumes, compose services.

Against the session's private dockerd (tests/fakes/dockerd.py); each test runs
its own containers of the session's `rbt-app` images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import Level, PermanentError, StepContext, spec_of
from actions.docker import DockerClient, DockerTarget, memory_key
from tests.fakes.docker_apps import (
    APP,
    CHANGES,
    Crash,
    app,
    containers_named,
    crash_after,
    params,
    swap,
    unique,
    version_served,
)
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.dockerd"]

ANONYMOUS_MOUNT = {"Mounts": [{"Type": "volume", "Target": "/data"}]}
"""`docker run --mount type=volume,target=/data`: a volume without a name."""


def write_data(engine: Engine, name: str) -> str:
    """Write a file into the container's /data volume; return the volume's name."""
    engine.exec(name, "/bin/busybox", "sh", "-c", "echo kept > /data/file", user="0")
    return data_volume(engine, name)


def data_volume(engine: Engine, name: str) -> str:
    return str(
        next(m["Name"] for m in engine.inspect(name)["Mounts"] if m["Destination"] == "/data")
    )


def read_data(engine: Engine, name: str) -> str:
    return engine.exec(name, "/bin/busybox", "cat", "/data/file")


def volume_exists(engine: Engine, volume: str) -> bool:
    return engine.http.get(f"/v1.41/volumes/{volume}").status_code == 200


# -- anonymous volumes ------------------------------------------------------------------------


def test_an_anonymous_mount_volume_goes_over_to_the_new_container_with_its_data(
    dockerd: Engine,
) -> None:
    name, port = app(dockerd, "v2", HostConfig=ANONYMOUS_MOUNT)
    volume = write_data(dockerd, name)
    swap(dockerd, name, "v1")
    assert version_served(port) == "v1"
    assert data_volume(dockerd, name) == volume
    assert read_data(dockerd, name) == "kept\n"
    mounts = dockerd.inspect(name)["HostConfig"]["Mounts"]
    assert mounts == [{"Type": "volume", "Source": volume, "Target": "/data"}]


def test_a_bind_mount_made_with_mount_goes_over_as_written(dockerd: Engine, tmp_path: Path) -> None:
    (tmp_path / "settings.txt").write_text("from the host\n")
    bind = {"Type": "bind", "Source": str(tmp_path), "Target": "/etc/app", "ReadOnly": True}
    name, _ = app(dockerd, "v2", HostConfig={"Mounts": [bind]})
    swap(dockerd, name, "v1")
    assert dockerd.inspect(name)["HostConfig"]["Mounts"] == [bind]
    read = dockerd.exec(name, "/bin/busybox", "cat", "/etc/app/settings.txt", user="0")
    assert read == "from the host\n"


# -- --rm (AutoRemove) ------------------------------------------------------------------------


def rm_app(engine: Engine) -> tuple[str, int]:
    """Run `docker run --rm --mount type=volume,target=/data` of v2."""
    return app(engine, "v2", HostConfig={"AutoRemove": True, **ANONYMOUS_MOUNT})


def test_a_container_run_with_rm_is_swapped_with_its_volume_and_not_said_to_be_kept(
    dockerd: Engine,
) -> None:
    name, port = rm_app(dockerd)
    old_id = dockerd.inspect(name)["Id"]
    volume = write_data(dockerd, name)
    step = DockerTarget(params(dockerd, name, keep_retired=1)).plan("v1").rollback[0]
    assert "it runs with --rm, so the engine removes it when it stops" in step.describe()
    assert "recreate the old container from its recorded settings" in step.describe()
    result = step.run(StepContext.for_test(timeout=90))
    assert "kept as" not in result.summary
    assert result.summary.endswith("ran with --rm: the engine removed it when it stopped")
    assert version_served(port) == "v1"
    assert read_data(dockerd, name) == "kept\n" and data_volume(dockerd, name) == volume
    assert not dockerd.exists(old_id) and containers_named(dockerd, name) == [name]
    assert dockerd.inspect(name)["HostConfig"]["AutoRemove"] is True


def test_a_container_run_with_rm_is_recreated_when_the_new_one_fails(dockerd: Engine) -> None:
    name, port = rm_app(dockerd)
    old = dockerd.inspect(name)
    volume = write_data(dockerd, name)
    with pytest.raises(PermanentError) as failure:
        swap(dockerd, name, "crash")
    message = str(failure.value)
    assert "switched back" in message and "failed too" not in message
    assert "exit code 3" in message
    now = dockerd.inspect(name)
    assert now["Id"] != old["Id"] and not dockerd.exists(old["Id"])
    assert now["Image"] == old["Image"] and now["Config"]["Image"] == f"{APP}:v2"
    assert now["State"]["Running"] and now["HostConfig"]["AutoRemove"] is True
    assert f"switched back: {name} ({now['Id'][:12]}) is running {APP}:v2" in message
    assert version_served(port) == "v2"
    assert data_volume(dockerd, name) == volume and read_data(dockerd, name) == "kept\n"
    assert containers_named(dockerd, name) == [name]


def test_the_exit_code_of_a_container_the_engine_removed_is_read_from_its_events(
    dockerd: Engine,
) -> None:
    name = unique("rbt-gone")
    container_id = dockerd.run(name, {"Image": f"{APP}:crash", "HostConfig": {"AutoRemove": True}})
    wait_for(lambda: not dockerd.exists(container_id), timeout=30, what="--rm removal")
    with DockerClient(dockerd.socket) as client:
        assert client.exit_code(container_id) == 3
        assert client.exit_code("0" * 64) is None


def test_a_crash_during_a_switch_back_of_a_container_run_with_rm_resumes_to_the_old_version(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    points: list[str] = []
    for k in range(1, 16):
        name, port = rm_app(dockerd)
        volume = write_data(dockerd, name)
        target = DockerTarget(params(dockerd, name, settle=0.5))
        step = target.plan("crash").rollback[0]
        memory: dict[str, Any] = {}
        with monkeypatch.context() as patch:
            # Removing the crashed new container races the engine's own --rm removal (a
            # remove answered "already in progress" is no call of ours), so removes are not
            # crash points here and the other calls come in one order.
            calls = crash_after(patch, k, counted=tuple(c for c in CHANGES if c != "remove"))
            with pytest.raises((Crash, PermanentError)):
                step.run(StepContext.for_test(timeout=60, memory=memory))
        if len(calls) < k:
            break
        points.append(calls[-1])
        with pytest.raises(PermanentError, match="switched back"):
            target.restore(step.name, spec_of(step)).run(
                StepContext.for_test(timeout=60, memory=memory)
            )
        now = dockerd.inspect(name)
        assert now["Config"]["Image"] == f"{APP}:v2" and now["State"]["Running"], calls
        assert containers_named(dockerd, name) == [name], f"crash after {calls}"
        assert memory[memory_key(name)]["phase"] == "reverted"
        assert version_served(port) == "v2"
        assert data_volume(dockerd, name) == volume and read_data(dockerd, name) == "kept\n"
    # forward: rename the old, create the new, stop the old, start the new; it fails, and
    # the engine has removed the old one (--rm): switch back by creating it again, start it
    assert points == ["rename", "create", "stop", "start", "create", "start"], points


def test_the_verdict_says_how_a_container_run_with_rm_is_swapped(dockerd: Engine) -> None:
    name, _ = rm_app(dockerd)
    findings = DockerTarget(params(dockerd, name)).evidence("v1")
    assert all(f.level == Level.OK for f in findings), findings
    assert f"container {name} runs with --rm: the engine removes it when it stops" in " ".join(
        f.text for f in findings
    )


# -- compose services -------------------------------------------------------------------------


def compose_labels(project: str, number: int, *, oneoff: bool = False) -> dict[str, str]:
    """The labels docker compose gives a service container (docker/compose pkg/api/labels.go)."""
    return {
        "com.docker.compose.project": project,
        "com.docker.compose.service": "web",
        "com.docker.compose.container-number": str(number),
        "com.docker.compose.oneoff": "True" if oneoff else "False",
        "com.docker.compose.config-hash": "3f1c0a",
    }


def test_a_compose_service_is_risky_and_its_old_container_is_not_kept(dockerd: Engine) -> None:
    project = unique("proj")
    name, port = app(dockerd, "v2", Labels=compose_labels(project, 1))
    replica, _ = app(dockerd, "v2", Labels=compose_labels(project, 2))
    app(dockerd, "v2", Labels=compose_labels(project, 1, oneoff=True))  # `compose run`
    target = DockerTarget(params(dockerd, name, keep_retired=1))
    risky = [f.text for f in target.evidence("v1") if f.level == Level.RISKY]
    assert risky == [
        f"container {name} is service web of compose project {project}: its compose file "
        f"still names {APP}:v2, and `docker compose up` recreates the service from it when the "
        "service's configuration or image digest changes (or with --force-recreate), undoing "
        "the rollback: pin the version rolled back to in the compose file",
        f"compose service web has 2 containers: only {name} is swapped, {replica} keep their image",
    ]
    step = target.plan("v1").rollback[0]
    assert f"remove the old container (compose service {project}/web" in step.describe()
    result = step.run(StepContext.for_test(timeout=90))
    assert "kept as" not in result.summary and "was removed (compose service" in result.summary
    assert containers_named(dockerd, f"{name}-rollback-") == []
    assert version_served(port) == "v1"
    labels = dockerd.inspect(name)["Config"]["Labels"]
    assert {k: labels[k] for k in compose_labels(project, 1)} == compose_labels(project, 1)
