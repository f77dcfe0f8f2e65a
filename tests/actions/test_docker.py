"""The Docker swap against a real private dockerd (tests/fakes/dockerd.py).

Each test runs its own containers (unique names, ports free on 127.0.0.1) on
the session's engine and test images (`rbt-app:v1`..`v3` serve /health and
/version with busybox httpd; `rbt-app:crash` exits 3 at once).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions import voice
from actions.base import PermanentError, PlanningError, StepContext, spec_of
from actions.docker import HISTORY_LABEL, DockerClient, DockerTarget, memory_key
from tests.fakes.docker_apps import (
    APP,
    SECRET,
    app,
    containers_named,
    params,
    swap,
    unique,
    version_served,
)
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.dockerd"]


# -- success ------------------------------------------------------------------------------


def test_swap_runs_the_previous_image_under_the_same_name_and_port(dockerd: Engine) -> None:
    name, port = app(dockerd, "v2")
    old_id = dockerd.inspect(name)["Id"]
    result = swap(dockerd, name, "v1", keep_retired=1)
    assert result.summary.startswith(f"{name} now runs {APP}:v1 (was {APP}:v2)")
    assert (
        result.data["healthy_at"] and result.data["to_image_id"] == dockerd.inspect(name)["Image"]
    )
    assert version_served(port) == "v1"
    new = dockerd.inspect(name)
    assert new["Id"] != old_id and new["Config"]["Image"] == f"{APP}:v1"
    kept = containers_named(dockerd, f"{name}-rollback-")
    assert len(kept) == 1 and dockerd.inspect(kept[0])["Id"] == old_id
    assert dockerd.inspect(kept[0])["State"]["Running"] is False


def test_swap_removes_retired_containers_beyond_keep_retired(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v3")
    swap(dockerd, name, "v2", keep_retired=1)
    swap(dockerd, name, "v1", keep_retired=1)
    kept = containers_named(dockerd, f"{name}-rollback-")
    assert [dockerd.inspect(k)["Config"]["Image"] for k in kept] == [f"{APP}:v2"]


def test_swap_output_names_env_variables_but_not_their_values(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    output = swap(dockerd, name, "v1").output
    assert "DATABASE_URL" in output and "s3cret" not in output


def test_rerun_after_success_changes_nothing(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    target = DockerTarget(params(dockerd, name))
    step = target.plan("v1").rollback[0]
    memory: dict[str, Any] = {}
    step.run(StepContext.for_test(timeout=60, memory=memory))
    new_id = dockerd.inspect(name)["Id"]
    again = target.restore(step.name, spec_of(step)).run(StepContext.for_test(memory=memory))
    assert again.skipped and again.summary.startswith("already done")
    assert dockerd.inspect(name)["Id"] == new_id
    assert memory[memory_key(name)]["phase"] == "done"


def test_restore_rebuilds_the_planned_step_and_refuses_unknown_ones(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    target = DockerTarget(params(dockerd, name))
    step = target.plan("v1").rollback[0]
    rebuilt = target.restore(step.name, spec_of(step))
    assert rebuilt.describe() == step.describe()
    with pytest.raises(PlanningError, match=r"has no step .docker\.nope"):
        target.restore("docker.nope", spec_of(step))
    with pytest.raises(PlanningError, match="is for container other"):
        target.restore(step.name, spec_of(step) | {"container": "other"})


# -- carry-over ---------------------------------------------------------------------------


def test_swap_carries_over_every_setting_field_by_field(dockerd: Engine, tmp_path: Path) -> None:
    net_a, net_b = dockerd.network(), dockerd.network()
    peer = unique("rbt-peer")
    dockerd.run(peer, {"Image": f"{APP}:v1"}, networks={net_a: {}})
    subnet_b = dockerd.call("GET", f"/networks/{net_b}").json()["IPAM"]["Config"][0]["Subnet"]
    static_ip = subnet_b.rsplit(".", 1)[0] + ".50"
    (tmp_path / "bound.txt").write_text("from the host\n")
    healthcheck = {
        "Test": [
            "CMD",
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            "http://127.0.0.1:8080/health",
        ],
        "Interval": 300_000_000,
        "Timeout": 2_000_000_000,
        "Retries": 3,
    }
    name, port = app(
        dockerd,
        "v2",
        restart="unless-stopped",
        networks={
            net_a: {"Aliases": ["web", "api"], "Links": [f"{peer}:peerlink"]},
            net_b: {"Aliases": ["web-b"], "IPAMConfig": {"IPv4Address": static_ip}},
        },
        Hostname="web-host",
        Domainname="example.internal",
        User="1000:1000",
        WorkingDir="/",
        Cmd=["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
        Labels={"team": "payments", "app.version": "v2"},
        Env=[SECRET, "FEATURE=on"],
        Healthcheck=healthcheck,
        StopSignal="SIGINT",
        StopTimeout=3,
        Volumes={"/data": {}},
        HostConfig={
            "Binds": [f"{tmp_path}:/mnt/host:ro"],
            "Memory": 64 * 1024 * 1024,
            "NanoCpus": 500_000_000,
            "PidsLimit": 64,
        },
    )
    assert dockerd.exec(name, "/bin/busybox", "sh", "-c", "echo kept > /data/file", user="0") == ""
    old = dockerd.inspect(name)

    swap(dockerd, name, "v1", health_url=f"http://127.0.0.1:{port}/health")

    new = dockerd.inspect(name)
    assert new["State"]["Health"]["Status"] == "healthy"
    _assert_config_carried(old["Config"], new["Config"])
    _assert_host_config_carried(old, new)
    _assert_networks_carried(old, new)
    assert dockerd.exec(name, "/bin/busybox", "cat", "/data/file") == "kept\n"
    assert (
        dockerd.exec(name, "/bin/busybox", "cat", "/mnt/host/bound.txt", user="0")
        == "from the host\n"
    )
    fetched = dockerd.exec(peer, "/bin/busybox", "wget", "-q", "-O-", "http://api:8080/version")
    assert fetched == "v1\n"


def _assert_config_carried(old: dict[str, Any], new: dict[str, Any]) -> None:
    same = ("User", "WorkingDir", "Hostname", "Domainname", "Healthcheck", "StopSignal")
    same += ("StopTimeout", "ExposedPorts", "Entrypoint", "Cmd", "Volumes")
    for key in same:
        assert new.get(key) == old.get(key), key
    assert sorted(new["Env"]) == sorted(
        e.replace("APP_VERSION=v2", "APP_VERSION=v1") for e in old["Env"]
    )
    labels = {k: v for k, v in new["Labels"].items() if k != HISTORY_LABEL}
    assert labels == old["Labels"] | {"app.version": "v1"}


def _assert_host_config_carried(old: dict[str, Any], new: dict[str, Any]) -> None:
    old_host, new_host = dict(old["HostConfig"]), dict(new["HostConfig"])
    volume = next(m for m in old["Mounts"] if m["Destination"] == "/data")
    assert new_host.pop("Binds") == [*old_host.pop("Binds"), f"{volume['Name']}:/data"]
    assert new_host == old_host

    def mounts(c: dict[str, Any]) -> list[tuple[Any, ...]]:
        return sorted(
            (m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"])
            for m in c["Mounts"]
        )

    assert mounts(new) == mounts(old)


def _assert_networks_carried(old: dict[str, Any], new: dict[str, Any]) -> None:
    old_nets = old["NetworkSettings"]["Networks"]
    new_nets = new["NetworkSettings"]["Networks"]
    assert set(new_nets) == set(old_nets)
    for network, was in old_nets.items():
        now = new_nets[network]
        assert set(now["Aliases"]) - {new["Id"][:12]} == set(was["Aliases"]) - {old["Id"][:12]}
        assert old["Id"][:12] not in now["Aliases"]
        assert (now["IPAMConfig"], now["Links"]) == (was["IPAMConfig"], was["Links"])
        if was["IPAMConfig"]:
            assert now["IPAddress"] == was["IPAddress"]


# -- crash-looping images -----------------------------------------------------------------


@pytest.mark.parametrize("restart", ["no", "unless-stopped"])
@pytest.mark.parametrize("with_url", [False, True], ids=["no-url", "health-url"])
def test_crash_looping_image_switches_back_to_the_old_container(
    dockerd: Engine, restart: str, with_url: bool
) -> None:
    name, port = app(dockerd, "v2", restart=restart)
    old = dockerd.inspect(name)
    url = f"http://127.0.0.1:{port}/health" if with_url else None
    with pytest.raises(PermanentError) as failure:
        swap(dockerd, name, "crash", health_url=url)
    message = str(failure.value)
    assert "exit code 3" in message
    assert "is restarting" in message or "restarted" in message or "is exited" in message
    assert "did not answer" not in message and "not healthy in time" not in message
    assert f"switched back: {name} ({old['Id'][:12]}) is running {APP}:v2" in message
    now = dockerd.inspect(name)
    assert now["Id"] == old["Id"] and now["State"]["Running"]
    assert now["HostConfig"]["RestartPolicy"] == old["HostConfig"]["RestartPolicy"]
    assert containers_named(dockerd, name) == [name]
    assert version_served(port) == "v2"


def test_crash_looping_image_with_restart_policy_is_named_restarting(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2", restart="always")
    with pytest.raises(
        PermanentError, match=r"(is restarting|restarted \d+ times, last), exit code 3"
    ):
        swap(dockerd, name, "crash", settle=3.0)


def test_unhealthy_by_its_own_healthcheck_switches_back(dockerd: Engine) -> None:
    failing = {"Test": ["CMD", "/bin/busybox", "false"], "Interval": 200_000_000, "Retries": 1}
    name, port = app(dockerd, "v2", Healthcheck=failing)
    with pytest.raises(PermanentError, match=r"unhealthy by its own healthcheck.*switched back"):
        swap(dockerd, name, "v1", settle=15.0)
    assert dockerd.inspect(name)["Config"]["Image"] == f"{APP}:v2"
    assert version_served(port) == "v2"


# -- port clash ---------------------------------------------------------------------------


def _hold_port_after_stop(
    monkeypatch: pytest.MonkeyPatch, port: int, *, release_on_remove: bool
) -> list[socket.socket]:
    """Take the container's port as soon as the old container stops (another process grabs it)."""
    held: list[socket.socket] = []
    stop, remove = DockerClient.stop, DockerClient.remove

    def stop_then_take(self: DockerClient, container_id: str, *, timeout: int) -> str:
        outcome = stop(self, container_id, timeout=timeout)
        grab = socket.socket()
        grab.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        grab.bind(("127.0.0.1", port))
        grab.listen()
        held.append(grab)
        return outcome

    def remove_then_release(self: DockerClient, container_id: str, *, force: bool = False) -> bool:
        removed = remove(self, container_id, force=force)
        if release_on_remove:
            for s in held:
                s.close()
        return removed

    monkeypatch.setattr(DockerClient, "stop", stop_then_take)
    monkeypatch.setattr(DockerClient, "remove", remove_then_release)
    return held


def test_port_clash_at_start_switches_back(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, port = app(dockerd, "v2")
    _hold_port_after_stop(monkeypatch, port, release_on_remove=True)
    with pytest.raises(PermanentError) as failure:
        swap(dockerd, name, "v1")
    message = str(failure.value)
    assert "address already in use" in message and "switched back" in message
    assert dockerd.inspect(name)["Config"]["Image"] == f"{APP}:v2"
    assert version_served(port) == "v2"


def test_port_clash_that_stays_says_exactly_what_the_host_runs(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, port = app(dockerd, "v2")
    held = _hold_port_after_stop(monkeypatch, port, release_on_remove=False)
    try:
        with pytest.raises(PermanentError) as failure:
            swap(dockerd, name, "v1")
    finally:
        for s in held:
            s.close()
    message = str(failure.value)
    assert "switching back to rbt-app:v2 failed too" in message
    assert "address already in use" in message
    old = dockerd.inspect(name)
    assert old["Config"]["Image"] == f"{APP}:v2" and not old["State"]["Running"]
    assert f"{name} ({old['Id'][:12]}) from {APP}:v2 is " in message


# -- refusals -----------------------------------------------------------------------------


def test_plan_refuses_the_running_image(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    with pytest.raises(PlanningError, match="already runs"):
        DockerTarget(params(dockerd, name)).plan("v2")


def test_plan_refuses_an_image_of_another_repository(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    with pytest.raises(PlanningError, match="is not an image of repository"):
        DockerTarget(params(dockerd, name)).plan("other/app:v1")


def test_swap_refuses_a_container_changed_since_the_plan(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    step = DockerTarget(params(dockerd, name)).plan("v1").rollback[0]
    dockerd.call("DELETE", f"/containers/{name}", params={"force": "1"})
    dockerd.run(name, {"Image": f"{APP}:v3"}, networks={dockerd.network(): {}})
    with pytest.raises(PermanentError, match=r"now runs rbt-app:v3.*nothing was changed"):
        step.run(StepContext.for_test())
    assert dockerd.inspect(name)["Config"]["Image"] == f"{APP}:v3"


def test_checks_name_the_engine_container_and_image(dockerd: Engine) -> None:
    name, _ = app(dockerd, "v2")
    checks = DockerTarget(params(dockerd, name)).checks("v1")
    assert [c.ok for c in checks] == [True, True, True]
    assert "API 1.41" in checks[0].detail
    assert "is on the host" in checks[2].detail


def test_checks_fail_for_a_crash_looping_container(dockerd: Engine) -> None:
    name, _ = app(dockerd, "crash", restart="always")
    wait_for(lambda: dockerd.inspect(name)["RestartCount"] >= 1, what="a first restart")
    checks = DockerTarget(params(dockerd, name)).checks("v1")
    assert checks[1].ok is False
    assert "exit code 3" in checks[1].detail or "restarted" in checks[1].detail


def test_the_health_wait_says_what_it_still_waits_for(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voice, "SAY_SECONDS", 0.3)
    name, port = app(dockerd, "v2")
    said: list[str] = []
    step = DockerTarget(params(dockerd, name, settle=1.5)).plan("v1").rollback[0]
    step.run(StepContext.for_test(timeout=90, memory={}, emit=said.append))
    waits = [line for line in said if line.startswith(f"waiting for {name}: ")]
    assert len(waits) >= 2 and all("it has not run its settle period" in w for w in waits), said
    assert version_served(port) == "v1"
