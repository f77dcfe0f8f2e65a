"""The Docker rollback against the fake Engine API on a unix socket in the test's temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.base import (
    Action,
    PermanentError,
    PlanningError,
    StepContext,
    TemporaryError,
)
from actions.docker import (
    DockerClient,
    DockerParams,
    DockerTarget,
    SwapContainer,
    memory_key,
    short_id,
)
from bot.sandbox.docker import FakeDockerEngine
from bot.sandbox.web import Reply, WebStub

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
NAME = "voxflow-api"
SECRET_ENV = "DATABASE_URL=postgres://app:s3cret@db/voxflow"
PORTS = {"3000/tcp": [{"HostIp": "", "HostPort": "3000"}]}
RESTART = {"Name": "unless-stopped", "MaximumRetryCount": 0}
BINDS = ["/srv/voxflow/uploads:/app/uploads"]


class Crash(BaseException):
    """The bot dying mid-step: not an ActionError, so nothing catches it."""


class CrashingMemory(dict[str, Any]):
    """Durable memory whose write of `phase` kills the step once, before it is saved."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase: str | None = phase

    def __setitem__(self, key: str, value: Any) -> None:
        if self.phase is not None and value.get("phase") == self.phase:
            self.phase = None
            raise Crash(f"bot died before saving phase {value['phase']}")
        super().__setitem__(key, value)


def _image(engine: FakeDockerEngine, tag: str, *, age: timedelta) -> str:
    version = tag.lstrip("v")
    return engine.add_image(
        f"voxflow/api:{tag}",
        created=NOW - age,
        env=["PATH=/usr/local/bin:/usr/bin:/bin", f"APP_VERSION={version}"],
        labels={"org.opencontainers.image.version": version},
        exposed_ports=["3000/tcp"],
    )


@pytest.fixture
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDockerEngine]:
    with FakeDockerEngine(tmp_path_factory.mktemp("dk")) as fake:
        _image(fake, "v1.2.2", age=timedelta(days=3))
        _image(fake, "v1.2.3", age=timedelta(days=2))
        _image(fake, "v1.2.4", age=timedelta(days=1))
        fake.tag("voxflow/api:v1.2.4", "voxflow/api:latest")
        _image(fake, "v1.2.5", age=timedelta(hours=1))
        fake.add_image("redis:7", created=NOW)
        fake.run_container(
            NAME,
            "voxflow/api:v1.2.4",
            env=[SECRET_ENV, "LOG_LEVEL=info"],
            labels={"com.example.team": "voice"},
            port_bindings=PORTS,
            restart_policy=RESTART,
            binds=BINDS,
        )
        yield fake


def _params(engine: FakeDockerEngine, **changes: Any) -> DockerParams:
    fields: dict[str, Any] = {"kind": "docker", "container": NAME, "image": "voxflow/api"}
    fields |= {"socket": engine.socket_path, "stop_timeout": 1, "health_interval": 0.01}
    return DockerParams.model_validate(fields | changes)


def _target(engine: FakeDockerEngine, **changes: Any) -> DockerTarget:
    return DockerTarget(_params(engine, **changes), clock=lambda: NOW)


def _swap(engine: FakeDockerEngine, ref: str | None = None, **changes: Any) -> SwapContainer:
    [action] = _target(engine, **changes).plan(ref).rollback
    assert isinstance(action, SwapContainer)
    return action


def _running(engine: FakeDockerEngine) -> dict[str, Any]:
    container = engine.inspect(NAME)
    assert container is not None and container["State"]["Running"]
    return container


# -- planning -----------------------------------------------------------------------


def test_points_list_repository_images_newest_first_with_running_marked(
    engine: FakeDockerEngine,
) -> None:
    points = _target(engine).points()
    assert [p.ref for p in points] == [f"voxflow/api:v1.2.{n}" for n in (5, 4, 3, 2)]
    assert [p.is_current for p in points] == [False, True, False, False]
    image_id = short_id(_running(engine)["Image"])
    assert points[1].label == f"v1.2.4 (also latest) · {image_id} · 1d ago · running"


def test_plan_defaults_to_newest_image_older_than_the_running_one(
    engine: FakeDockerEngine,
) -> None:
    action = _swap(engine)
    assert (action.from_image, action.to_image) == ("voxflow/api:v1.2.4", "voxflow/api:v1.2.3")
    assert isinstance(action, Action) and action.idempotent


def test_describe_names_container_and_both_images_exactly(engine: FakeDockerEngine) -> None:
    action = _swap(engine, health_url="http://127.0.0.1:3000/health")
    old, new = short_id(action.from_image_id), short_id(action.to_image_id)
    assert action.describe() == (
        f"Swap container voxflow-api from voxflow/api:v1.2.4 ({old}) to voxflow/api:v1.2.3 "
        f"({new}): stop it (up to 1s), remove it, then create and start voxflow/api:v1.2.3 as "
        "voxflow-api with the same env, labels, ports, restart policy and binds; "
        "poll http://127.0.0.1:3000/health until it answers 2xx"
    )


@pytest.mark.parametrize("ref", ["v1.2.2", "voxflow/api:v1.2.2"])
def test_plan_takes_a_named_image_as_tag_or_reference(engine: FakeDockerEngine, ref: str) -> None:
    assert _swap(engine, ref).to_image == "voxflow/api:v1.2.2"


def test_plan_refuses_an_image_missing_on_the_host(engine: FakeDockerEngine) -> None:
    with pytest.raises(PlanningError, match=r"voxflow/api:v9 is not on this host; pull it first"):
        _target(engine).plan("v9")


def test_plan_refuses_an_image_of_another_repository(engine: FakeDockerEngine) -> None:
    with pytest.raises(PlanningError, match="redis:7 is not an image of repository voxflow/api"):
        _target(engine).plan("redis:7")


def test_plan_refuses_the_running_image(engine: FakeDockerEngine) -> None:
    with pytest.raises(PlanningError, match="already runs voxflow/api:latest"):
        _target(engine).plan("latest")


def test_plan_refuses_a_newer_image_unless_forced(engine: FakeDockerEngine) -> None:
    with pytest.raises(PlanningError, match=r"newer than the running voxflow/api:v1.2.4"):
        _target(engine).plan("v1.2.5")
    [action] = _target(engine).plan("v1.2.5", force=True).rollback
    assert isinstance(action, SwapContainer) and action.to_image == "voxflow/api:v1.2.5"


def test_plan_refuses_when_no_older_image_is_on_the_host(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with FakeDockerEngine(tmp_path_factory.mktemp("dk")) as engine:
        _image(engine, "v1.0.0", age=timedelta(days=1))
        engine.run_container(NAME, "voxflow/api:v1.0.0")
        with pytest.raises(PlanningError, match="no local image of voxflow/api is older"):
            _target(engine).plan(None)


def test_plan_reports_an_unreachable_engine_as_planning_error(tmp_path: Path) -> None:
    params = DockerParams(
        kind="docker", container=NAME, image="voxflow/api", socket=str(tmp_path / "none.sock")
    )
    with pytest.raises(PlanningError, match="Docker engine: cannot reach"):
        DockerTarget(params).plan(None)


def test_checks_pass_for_a_running_container_and_present_image(engine: FakeDockerEngine) -> None:
    checks = _target(engine).checks(None)
    assert [(c.name, c.ok) for c in checks] == [
        ("Docker engine reachable", True),
        ("container voxflow-api running", True),
        ("target image present locally", True),
    ]
    assert checks[0].detail.startswith("Docker 24.0.7, API 1.43")
    assert checks[2].detail.startswith("voxflow/api:v1.2.3 (")


def test_checks_fail_for_a_missing_image(engine: FakeDockerEngine) -> None:
    image_check = _target(engine).checks("v9")[2]
    assert not image_check.ok and "voxflow/api:v9 is not on this host" in image_check.detail


def test_checks_fail_everything_when_the_engine_is_unreachable(tmp_path: Path) -> None:
    params = DockerParams(
        kind="docker", container=NAME, image="voxflow/api", socket=str(tmp_path / "none.sock")
    )
    checks = DockerTarget(params).checks(None)
    assert [c.ok for c in checks] == [False, False, False]
    assert checks[0].detail.startswith("cannot reach")


# -- errors from the engine -------------------------------------------------------


def test_engine_5xx_is_temporary_and_4xx_permanent_with_docker_message(
    engine: FakeDockerEngine,
) -> None:
    engine.fail("version", status=500, message="daemon busy", times=1)
    engine.fail("images", status=400, message="invalid filter")
    with DockerClient(engine.socket_path) as client:
        with pytest.raises(TemporaryError, match=r"^daemon busy$"):
            client.version()
        with pytest.raises(PermanentError, match=r"^invalid filter$"):
            client.images("voxflow/api")


def test_refused_connection_is_temporary(tmp_path: Path) -> None:
    with DockerClient(str(tmp_path / "none.sock")) as client, pytest.raises(TemporaryError):
        client.ping()


# -- the swap ---------------------------------------------------------------------


def test_swap_recreates_the_container_from_the_previous_image_with_its_settings(
    engine: FakeDockerEngine,
) -> None:
    old_id = _running(engine)["Id"]
    ctx = StepContext.for_test(timeout=10)
    result = _swap(engine).run(ctx)
    new = _running(engine)
    assert result.summary == "voxflow-api now runs voxflow/api:v1.2.3 (was voxflow/api:v1.2.4)"
    assert new["Id"] != old_id and engine.container_names() == [NAME]
    assert new["Config"]["Image"] == "voxflow/api:v1.2.3"
    assert set(new["Config"]["Env"]) == {
        SECRET_ENV,
        "LOG_LEVEL=info",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "APP_VERSION=1.2.3",
    }
    assert new["Config"]["Labels"] == {
        "com.example.team": "voice",
        "org.opencontainers.image.version": "1.2.3",
    }
    host = new["HostConfig"]
    assert (host["PortBindings"], host["RestartPolicy"], host["Binds"]) == (PORTS, RESTART, BINDS)


def test_swap_records_the_old_settings_in_memory_before_touching_anything(
    engine: FakeDockerEngine,
) -> None:
    engine.fail("stop", status=400, message="refused")
    ctx = StepContext.for_test(timeout=10)
    with pytest.raises(PermanentError):
        _swap(engine).run(ctx)
    record = ctx.memory[memory_key(NAME)]
    assert record["phase"] == "recorded"
    assert record["create"]["Env"] == [SECRET_ENV, "LOG_LEVEL=info"]
    assert record["create"]["Labels"] == {"com.example.team": "voice"}
    assert record["create"]["HostConfig"]["PortBindings"] == PORTS


def test_swap_output_names_env_variables_but_not_their_values(engine: FakeDockerEngine) -> None:
    lines: list[str] = []
    result = _swap(engine).run(StepContext.for_test(timeout=10, emit=lines.append))
    assert "env DATABASE_URL, LOG_LEVEL" in result.output
    assert "s3cret" not in result.output and not any("s3cret" in line for line in lines)


def test_swap_to_a_named_image_runs_that_image(engine: FakeDockerEngine) -> None:
    _swap(engine, "v1.2.2").run(StepContext.for_test(timeout=10))
    assert _running(engine)["Config"]["Image"] == "voxflow/api:v1.2.2"


def test_stop_failure_leaves_the_old_container_and_says_so(engine: FakeDockerEngine) -> None:
    engine.fail(
        "stop", status=500, message="tried to kill container, but did not receive an exit event"
    )
    old_id = _running(engine)["Id"]
    with pytest.raises(TemporaryError) as caught:
        _swap(engine).run(StepContext.for_test(timeout=10))
    assert str(caught.value) == (
        "old container voxflow-api (voxflow/api:v1.2.4) could not be stopped: tried to kill "
        "container, but did not receive an exit event; nothing was removed; container "
        f"voxflow-api ({short_id(old_id)}) is running voxflow/api:v1.2.4"
    )


def test_start_failure_reports_exactly_what_the_host_holds(engine: FakeDockerEngine) -> None:
    message = "failed to create task for container: exec: /app/start: no such file: unknown"
    engine.fail("start", image="voxflow/api:v1.2.3", status=400, message=message)
    with pytest.raises(PermanentError) as caught:
        _swap(engine).run(StepContext.for_test(timeout=10))
    assert str(caught.value) == (
        "old container voxflow-api (voxflow/api:v1.2.4) was removed; new container from "
        f"voxflow/api:v1.2.3 failed to start: {message}; no container named voxflow-api is running"
    )
    assert engine.container_names() == []


def test_temporary_start_failure_is_retried_to_completion(engine: FakeDockerEngine) -> None:
    engine.fail("start", image="voxflow/api:v1.2.3", status=500, message="shim busy", times=1)
    action, ctx = _swap(engine), StepContext.for_test(timeout=10)
    with pytest.raises(TemporaryError, match="failed to start: shim busy"):
        action.run(ctx)
    action.run(ctx)
    assert _running(engine)["Config"]["Image"] == "voxflow/api:v1.2.3"
    assert len(engine.calls("POST", "/containers/create")) == 2


def test_container_that_exits_after_starting_is_reported_and_kept(
    engine: FakeDockerEngine,
) -> None:
    engine.crash_on_start("voxflow/api:v1.2.3", exit_code=3)
    with pytest.raises(PermanentError) as caught:
        _swap(engine).run(StepContext.for_test(timeout=10))
    assert "from voxflow/api:v1.2.3 exited with code 3 after starting" in str(caught.value)
    assert str(caught.value).endswith("is exited)")
    assert engine.container_names() == [NAME]


def test_swap_refuses_a_container_changed_since_the_plan(engine: FakeDockerEngine) -> None:
    action = replace(_swap(engine), from_image_id="sha256:" + "0" * 64)
    with pytest.raises(PermanentError, match=r"not voxflow/api:v1.2.4 .* as planned; nothing"):
        action.run(StepContext.for_test(timeout=10))
    assert _running(engine)["Config"]["Image"] == "voxflow/api:v1.2.4"


def test_swap_refuses_a_tag_moved_since_the_plan(engine: FakeDockerEngine) -> None:
    action = _swap(engine)
    engine.tag("voxflow/api:v1.2.2", "voxflow/api:v1.2.3")
    with pytest.raises(PermanentError, match=r"now points at image .* nothing was changed"):
        action.run(StepContext.for_test(timeout=10))
    assert _running(engine)["Config"]["Image"] == "voxflow/api:v1.2.4"


# -- resuming ---------------------------------------------------------------------


def test_resume_after_crash_once_the_old_container_was_removed(engine: FakeDockerEngine) -> None:
    action, memory = _swap(engine), CrashingMemory(phase="removed")
    with pytest.raises(Crash):
        action.run(StepContext.for_test(timeout=10, memory=memory))
    assert memory[memory_key(NAME)]["phase"] == "recorded" and engine.container_names() == []
    result = action.run(StepContext.for_test(timeout=10, memory=memory))
    assert not result.skipped
    assert "was already gone" in result.output
    assert SECRET_ENV in _running(engine)["Config"]["Env"]


def test_resume_after_crash_once_the_new_container_was_created(engine: FakeDockerEngine) -> None:
    action, memory = _swap(engine), CrashingMemory(phase="created")
    with pytest.raises(Crash):
        action.run(StepContext.for_test(timeout=10, memory=memory))
    result = action.run(StepContext.for_test(timeout=10, memory=memory))
    assert "from an earlier attempt" in result.output
    assert len(engine.calls("POST", "/containers/create")) == 2
    assert engine.container_names() == [NAME]
    assert _running(engine)["Config"]["Image"] == "voxflow/api:v1.2.3"


def test_rerun_after_success_changes_nothing(engine: FakeDockerEngine) -> None:
    action, ctx = _swap(engine), StepContext.for_test(timeout=10)
    action.run(ctx)
    before = len(engine.requests)
    result = action.run(ctx)
    assert (
        result.skipped and result.summary == "skipped: voxflow-api already runs voxflow/api:v1.2.3"
    )
    assert len(engine.requests) == before


def test_rerun_with_lost_memory_skips_when_the_target_already_runs(
    engine: FakeDockerEngine,
) -> None:
    action = _swap(engine)
    action.run(StepContext.for_test(timeout=10))
    result = action.run(StepContext.for_test(timeout=10))
    assert result.skipped
    assert len(engine.calls("POST", "/containers/*/stop")) == 1


# -- health -----------------------------------------------------------------------


def test_swap_polls_health_until_it_answers_2xx(engine: FakeDockerEngine) -> None:
    with WebStub() as web:
        web.route("GET", "/health", Reply(503), Reply(503), Reply(200, json={"ok": True}))
        action = _swap(engine, health_url=f"{web.url}/health")
        result = action.run(StepContext.for_test(timeout=10))
        assert len(web.calls("GET", "/health")) == 3
    assert result.summary.endswith("; healthy")
    assert "answered HTTP 200 (attempt 3)" in result.output


def test_health_that_never_turns_2xx_fails_at_the_deadline(engine: FakeDockerEngine) -> None:
    with WebStub() as web:
        web.route("GET", "/health", Reply(503))
        action = _swap(engine, health_url=f"{web.url}/health")
        with pytest.raises(PermanentError) as caught:
            action.run(StepContext.for_test(timeout=0.5))
    assert str(caught.value).startswith(
        "old container voxflow-api (voxflow/api:v1.2.4) was removed; new container voxflow-api "
        f"(voxflow/api:v1.2.3) is running but {web.url}/health did not answer 2xx before the "
        "step's deadline (last: HTTP 503"
    )
