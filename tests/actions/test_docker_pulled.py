"""Rollback points of images pulled from a registry, as a fleet's hosts get them.

A pull records no tag time (moby distribution/pull_v2.go adds the tag to the
reference store only; `LastTagTime` stays Go's zero time), and reproducible
builds share one build time, so neither orders 1.9, 1.10, 1.11: their tags do.
Against the session's dockerd and Debian's docker-registry (tests/fakes/dockerd.py).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from actions.docker import DockerTarget, short_id
from bot.domain.plans import default_point
from tests.fakes.docker_apps import app, load_fixed_time_image, params, swap, version_served

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry

pytest_plugins = ["tests.fakes.dockerd"]

RELEASES = ("1.9", "1.10", "1.11")


def publish(engine: Engine, repo: str, versions: tuple[str, ...]) -> dict[str, str]:
    """Push each local `repo:<version>` and drop it from the host; return their digests."""
    anonymous = base64.urlsafe_b64encode(b"{}").decode()
    digests = {}
    for version in versions:
        pushed = engine.call(
            "POST",
            f"/images/{repo}/push",
            params={"tag": version},
            headers={"X-Registry-Auth": anonymous},
            timeout=60,
        )
        assert '"error"' not in pushed.text, pushed.text
        image = engine.call("GET", f"/images/{repo}:{version}/json").json()
        digests[version] = str(image["RepoDigests"][0].split("@", 1)[1])
        engine.call("DELETE", f"/images/{repo}:{version}", params={"force": "1"})
    return digests


def pull(engine: Engine, repo: str, tag_or_digest: str) -> None:
    """Pull `repo:<tag>` or `repo@<digest>` as `docker pull` asks the engine to."""
    pulled = engine.call(
        "POST", "/images/create", params={"fromImage": repo, "tag": tag_or_digest}, timeout=60
    )
    assert '"error"' not in pulled.text, pulled.text


def publish_and_pull(engine: Engine, repo: str, versions: tuple[str, ...]) -> None:
    """Push each local `repo:<version>`, drop it from the host, then pull them all in order."""
    publish(engine, repo, versions)
    for version in versions:
        pull(engine, repo, version)


def test_pulled_releases_default_to_the_previous_version_without_a_made_up_age(
    dockerd: Engine, registry: Registry
) -> None:
    repo = f"{registry.address}/rbt-pulled"
    for version in RELEASES:
        load_fixed_time_image(dockerd, f"{repo}:{version}", version)
    publish_and_pull(dockerd, repo, RELEASES)
    pulled = {v: dockerd.call("GET", f"/images/{repo}:{v}/json").json() for v in RELEASES}
    for image in pulled.values():  # what the real engine records of a pulled image
        assert image["Metadata"]["LastTagTime"] == "0001-01-01T00:00:00Z"
        assert image["Created"].startswith("1980-01-01") and image["RepoDigests"]
    name, port = app(dockerd, "1.11", image_repo=repo)
    target = DockerTarget(params(dockerd, name, image=repo))
    points = target.points()
    assert [p.ref for p in points] == [f"{repo}:{v}" for v in ("1.11", "1.10", "1.9")]
    assert default_point(points) == points[1]
    assert points[1].label == f"1.10 · {short_id(pulled['1.10']['Id'])} · on this host, pulled"
    assert all(" ago" not in p.label for p in points[1:]), [p.label for p in points]
    assert target.plan(None).rollback[0].spec()["to_image"] == f"{repo}:1.10"
    swap(dockerd, name, None, image=repo)
    assert version_served(port) == "1.10"


def test_a_newer_pulled_release_is_offered_after_the_earlier_ones_and_said_to_be_later(
    dockerd: Engine, registry: Registry
) -> None:
    repo = f"{registry.address}/rbt-pulled-later"
    versions = ("v2.9.0", "v2.10.0", "v2.10.1")
    for version in versions:
        load_fixed_time_image(dockerd, f"{repo}:{version}", version)
    publish_and_pull(dockerd, repo, versions)
    name, _ = app(dockerd, "v2.10.0", image_repo=repo)
    points = DockerTarget(params(dockerd, name, image=repo)).points()
    assert [p.ref.rpartition(":")[2] for p in points] == ["v2.10.0", "v2.9.0", "v2.10.1"]
    assert default_point(points) == points[1]
    assert points[2].label.endswith(" · a later version than the running one")


def test_an_image_pulled_by_digest_alone_is_offered_by_its_digest(
    dockerd: Engine, registry: Registry
) -> None:
    repo = f"{registry.address}/rbt-by-digest"
    for version in ("v1", "v2"):
        load_fixed_time_image(dockerd, f"{repo}:{version}", version)
    digests = publish(dockerd, repo, ("v1", "v2"))
    pull(dockerd, repo, digests["v1"])  # `docker pull repo@sha256:...`: no tag on the host
    pull(dockerd, repo, "v2")
    tags = dockerd.call("GET", f"/images/{repo}@{digests['v1']}/json").json()["RepoTags"]
    # No tag of this repository (the same content may carry another test's tag on this engine:
    # its build time is fixed, so its image id is the same).
    assert [tag for tag in tags if tag.startswith(f"{repo}:")] == []
    name, port = app(dockerd, "v2", image_repo=repo)
    points = DockerTarget(params(dockerd, name, image=repo)).points()
    assert [p.ref for p in points] == [f"{repo}:v2", f"{repo}@{digests['v1']}"]
    assert points[1].label.startswith(f"@{digests['v1'].removeprefix('sha256:')[:12]} · ")
    assert points[1].label.endswith(" · on this host, pulled by digest (no tag)")
    assert default_point(points) == points[1]
    swap(dockerd, name, None, image=repo)
    assert version_served(port) == "v1"
