"""Resume contract of the Docker swap: the bot dies after each engine call, then runs again.

The engine client raises `Crash` (not an ActionError: nothing catches it, as
when the bot is killed) right after its k-th call that changes something; the
step is then rebuilt with `target.restore(name, spec)` and run again with the
same memory. Read-only calls are not crash points of their own: dying after
one leaves the engine and memory exactly as dying after the change before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from actions.base import PermanentError, StepContext, spec_of
from actions.docker import DockerTarget, memory_key
from tests.fakes.docker_apps import (
    APP,
    CHANGES,
    Crash,
    app,
    containers_named,
    crash_after,
    params,
    version_served,
)

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine

pytest_plugins = ["tests.fakes.dockerd"]


def _crash_then_resume(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch, *, to: str, k: int
) -> tuple[str, int, str, dict[str, Any], list[str], Exception | None]:
    name, port = app(dockerd, "v2", restart="unless-stopped", networks=two_networks(dockerd))
    old_id = dockerd.inspect(name)["Id"]
    target = DockerTarget(params(dockerd, name, settle=0.5))
    step = target.plan(to).rollback[0]
    memory: dict[str, Any] = {}
    calls: list[str] = []
    with monkeypatch.context() as patch:
        calls = crash_after(patch, k)
        try:
            step.run(StepContext.for_test(timeout=60, memory=memory))
        except Crash:
            pass
        except PermanentError:
            return name, port, old_id, memory, calls, None
    error: Exception | None = None
    try:
        target.restore(step.name, spec_of(step)).run(
            StepContext.for_test(timeout=60, memory=memory)
        )
    except PermanentError as err:
        error = err
    return name, port, old_id, memory, calls, error


def two_networks(dockerd: Engine) -> dict[str, Any]:
    return {dockerd.network(): {"Aliases": ["web"]}, dockerd.network(): {"Aliases": ["web-b"]}}


def test_a_crash_after_each_engine_call_of_a_swap_resumes_to_the_new_container(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    points: list[str] = []
    for k in range(1, 12):
        name, port, old_id, memory, calls, error = _crash_then_resume(
            dockerd, monkeypatch, to="v1", k=k
        )
        assert error is None, f"crash after call {k}: {error}"
        if len(calls) < k:
            break
        points.append(calls[-1])
        new = dockerd.inspect(name)
        assert new["Config"]["Image"] == f"{APP}:v1" and new["State"]["Running"]
        assert len(new["NetworkSettings"]["Networks"]) == 2
        assert new["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert containers_named(dockerd, name) == [name], f"crash after {calls[-1]}"
        assert not dockerd.exists(old_id)
        assert memory[memory_key(name)]["phase"] == "done"
        assert version_served(port) == "v1"
    assert points == [*CHANGES[:6], "remove"]


def test_a_crash_after_each_engine_call_of_a_switch_back_resumes_to_the_old_container(
    dockerd: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    points: list[str] = []
    for k in range(1, 16):
        name, port, old_id, memory, calls, error = _crash_then_resume(
            dockerd, monkeypatch, to="crash", k=k
        )
        if len(calls) < k:
            break
        points.append(calls[-1])
        assert error is not None and "switched back" in str(error), f"crash after {k}: {error}"
        assert "exit code 3" in str(error) or "restarted" in str(error)
        old = dockerd.inspect(name)
        assert old["Id"] == old_id and old["State"]["Running"]
        assert old["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert containers_named(dockerd, name) == [name], f"crash after {calls[-1]}"
        assert memory[memory_key(name)]["phase"] == "reverted"
        assert version_served(port) == "v2"
    assert points[:6] == list(CHANGES[:6])
    assert points[6:] == ["remove", "rename", "update_restart_policy", "start"]
