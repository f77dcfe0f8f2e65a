"""The fake Docker engine answers like the Engine API: shapes, status codes, errors, merges."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.sandbox.docker import API_VERSION, FakeDockerEngine

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDockerEngine]:
    with FakeDockerEngine(tmp_path_factory.mktemp("dk")) as fake:
        fake.add_image(
            "voxflow/api:v1.2.3",
            created=T0,
            env=["PATH=/bin", "APP_VERSION=1.2.3"],
            labels={"version": "1.2.3"},
            exposed_ports=["3000/tcp"],
        )
        fake.add_image("voxflow/api:v1.2.4", created=T0.replace(day=2))
        fake.add_image("redis:7", created=T0.replace(day=3))
        yield fake


@pytest.fixture
def api(engine: FakeDockerEngine) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(uds=engine.socket_path)
    with httpx.Client(transport=transport, base_url="http://docker") as client:
        yield client


def test_ping_and_version_answer_on_versioned_and_plain_paths(api: httpx.Client) -> None:
    ping = api.get("/v1.41/_ping")
    assert (ping.status_code, ping.text, ping.headers["Api-Version"]) == (200, "OK", API_VERSION)
    assert api.get("/version").json()["ApiVersion"] == API_VERSION


def test_too_new_client_version_is_refused_with_engine_message(api: httpx.Client) -> None:
    response = api.get("/v1.99/version")
    assert response.status_code == 400
    assert response.json() == {
        "message": "client version 1.99 is too new. Maximum supported API version is 1.43"
    }


def test_unknown_container_is_404_with_docker_message(api: httpx.Client) -> None:
    response = api.get("/v1.43/containers/ghost/json")
    assert (response.status_code, response.json()) == (404, {"message": "No such container: ghost"})


def test_inspect_reports_name_image_state_and_host_config(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    container_id = engine.run_container(
        "voxflow-api",
        "voxflow/api:v1.2.3",
        port_bindings={"3000/tcp": [{"HostIp": "", "HostPort": "3000"}]},
        restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},
        binds=["/srv/up:/app/up"],
    )
    body = api.get("/containers/voxflow-api/json").json()
    assert body["Id"] == container_id and body["Name"] == "/voxflow-api"
    assert body["Config"]["Image"] == "voxflow/api:v1.2.3"
    assert body["Image"].startswith("sha256:")
    assert body["State"]["Status"] == "running" and body["State"]["Running"] is True
    assert body["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert body["HostConfig"]["Binds"] == ["/srv/up:/app/up"]
    assert body["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostPort"] == "3000"


def test_create_merges_the_image_config_under_the_request(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    body = {"Image": "voxflow/api:v1.2.3", "Env": ["APP_VERSION=override", "X=1"], "Labels": {}}
    response = api.post("/containers/create", params={"name": "web"}, json=body)
    assert response.status_code == 201
    config = api.get(f"/containers/{response.json()['Id']}/json").json()["Config"]
    assert config["Env"] == ["APP_VERSION=override", "X=1", "PATH=/bin"]
    assert config["Labels"] == {"version": "1.2.3"}
    assert config["ExposedPorts"] == {"3000/tcp": {}}
    assert config["Cmd"] == ["/app/start"]


def test_create_with_a_taken_name_is_409_conflict(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    taken = engine.run_container("voxflow-api", "voxflow/api:v1.2.3")
    response = api.post(
        "/containers/create", params={"name": "voxflow-api"}, json={"Image": "voxflow/api:v1.2.4"}
    )
    assert response.status_code == 409
    assert response.json()["message"] == (
        f'Conflict. The container name "/voxflow-api" is already in use by container "{taken}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )


def test_create_from_a_missing_image_is_404(api: httpx.Client) -> None:
    response = api.post("/containers/create", params={"name": "x1"}, json={"Image": "nope:1"})
    assert (response.status_code, response.json()) == (404, {"message": "No such image: nope:1"})


def test_stop_answers_204_then_304_and_remove_needs_a_stopped_container(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    engine.run_container("voxflow-api", "voxflow/api:v1.2.3")
    refused = api.delete("/containers/voxflow-api")
    assert refused.status_code == 409
    assert "You cannot remove a running container" in refused.json()["message"]
    codes = [api.post("/containers/voxflow-api/stop", params={"t": 1}).status_code for _ in "ab"]
    assert codes == [204, 304]
    assert api.delete("/containers/voxflow-api").status_code == 204
    assert api.get("/containers/voxflow-api/json").status_code == 404


def test_start_of_a_running_container_is_304(engine: FakeDockerEngine, api: httpx.Client) -> None:
    engine.run_container("voxflow-api", "voxflow/api:v1.2.3")
    assert api.post("/containers/voxflow-api/start").status_code == 304


def test_container_list_shows_running_unless_all_is_asked(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    engine.run_container("a1", "voxflow/api:v1.2.3")
    engine.run_container("b1", "voxflow/api:v1.2.4")
    api.post("/containers/b1/stop")
    running = [c["Names"] for c in api.get("/containers/json").json()]
    everything = [c["Names"] for c in api.get("/containers/json", params={"all": "1"}).json()]
    assert running == [["/a1"]]
    assert everything == [["/a1"], ["/b1"]]


def test_image_list_filters_by_repository_newest_first(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    engine.tag("voxflow/api:v1.2.4", "voxflow/api:latest")
    filters = json.dumps({"reference": ["voxflow/api"]})
    images = api.get("/images/json", params={"filters": filters}).json()
    assert [i["RepoTags"] for i in images] == [
        ["voxflow/api:v1.2.4", "voxflow/api:latest"],
        ["voxflow/api:v1.2.3"],
    ]
    assert images[1]["Created"] == int(T0.timestamp())


def test_image_inspect_takes_a_reference_with_slashes(api: httpx.Client) -> None:
    found = api.get("/v1.41/images/voxflow/api:v1.2.3/json")
    missing = api.get("/v1.41/images/voxflow/api:v9/json")
    assert found.status_code == 200 and found.json()["Created"].startswith("2025-03-01T12:00:00")
    assert (missing.status_code, missing.json()) == (
        404,
        {"message": "No such image: voxflow/api:v9"},
    )


def test_injected_failure_hits_only_its_image_and_only_so_often(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    engine.fail("start", image="voxflow/api:v1.2.4", status=500, message="boom", times=1)
    for name, image in (("a1", "voxflow/api:v1.2.3"), ("b1", "voxflow/api:v1.2.4")):
        api.post("/containers/create", params={"name": name}, json={"Image": image})
    assert api.post("/containers/a1/start").status_code == 204
    failed = api.post("/containers/b1/start")
    assert (failed.status_code, failed.json()) == (500, {"message": "boom"})
    assert api.post("/containers/b1/start").status_code == 204


def test_start_fails_when_a_published_port_is_taken(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    engine.run_container(
        "a1", "voxflow/api:v1.2.3", port_bindings={"3000/tcp": [{"HostPort": "3000"}]}
    )
    body = {
        "Image": "voxflow/api:v1.2.4",
        "HostConfig": {"PortBindings": {"3000/tcp": [{"HostPort": "3000"}]}},
    }
    api.post("/containers/create", params={"name": "b1"}, json=body)
    response = api.post("/containers/b1/start")
    assert response.status_code == 500
    assert response.json()["message"].endswith(
        "Bind for 0.0.0.0:3000 failed: port is already allocated"
    )


def test_crash_on_start_leaves_the_container_exited_with_its_code(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    engine.crash_on_start("voxflow/api:v1.2.4", exit_code=3)
    api.post("/containers/create", params={"name": "b1"}, json={"Image": "voxflow/api:v1.2.4"})
    assert api.post("/containers/b1/start").status_code == 204
    state = api.get("/containers/b1/json").json()["State"]
    assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 3)


def test_requests_are_recorded_without_version_prefix(
    engine: FakeDockerEngine, api: httpx.Client
) -> None:
    api.post("/v1.41/containers/create", params={"name": "a1"}, json={"Image": "redis:7"})
    [call] = engine.calls("POST", "/containers/create")
    assert (call.api_version, call.query, call.body) == (
        "1.41",
        {"name": "a1"},
        {"Image": "redis:7"},
    )


def test_stop_removes_the_socket_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = FakeDockerEngine(tmp_path_factory.mktemp("dk")).start()
    assert Path(engine.socket_path).exists()
    engine.stop()
    assert not Path(engine.socket_path).exists()


def test_socket_path_beyond_the_unix_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than"):
        FakeDockerEngine(tmp_path / ("x" * 120))
