"""The reversibility verdict's evidence for a container: the engine, the container, the image.

The pre-rollback checks are weighed (an unreachable engine, a missing
container or an unknown version blocks). The container's own setup is said
too: `--rm` changes how the swap and a switch-back go (actions.docker.swap),
and a compose service is risky. Compose finds its containers by their labels
and recreates one when its `com.docker.compose.config-hash` or
`com.docker.compose.image` label differs from what the compose file gives
(docker/compose pkg/compose/convergence.go, mustRecreate; labels in
pkg/api/labels.go). The swap keeps those labels, so a plain `docker compose up`
leaves the rolled-back container alone, but any change to the service, a
`--force-recreate` or a new digest behind the file's tag brings the version
rolled away from back: the compose file must be pinned by a person. A
service scaled to several containers has its other replicas left on their
image. An image already on the host is
runnable as it is; one that is not must be pulled by the swap, so its registry
is asked for the manifest first (actions.registry) with the credentials the
swap would send (the bot's Docker config, actions.docker.auth): gone or
refused blocks, unreachable is risky.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actions.base import Check, Finding, Level
from actions.docker.auth import _configs
from actions.registry import Pullable, Reference, check_manifest, credentials

if TYPE_CHECKING:
    from actions.docker.target import DockerTarget

IMAGE_CHECK = "target image at hand"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"
"""`True` on a `docker compose run` container, which is no replica of the service."""
PULLED = " is not on the host: pulled from "


def _weigh(check: Check) -> Finding:
    if check.ok:
        return Finding(Level.OK, f"{check.name}: {check.detail}", check.name)
    return Finding(Level.BLOCKED, f"{check.name} fails: {check.detail}", check.name)


def pull_finding(image: str) -> Finding:
    """Ask the image's registry whether it still has the image, with the swap's credentials."""
    registry = Reference.parse(image).registry
    auth, source = None, ""
    for where, config in _configs():
        auth = credentials(config.get("auths") or {}, registry)
        if auth is not None:
            source = f" (credentials from {where})"
            break
    answer = check_manifest(image, auth=auth)
    if answer.pullable == Pullable.YES:
        return Finding(
            Level.OK, f"image {image} is not on the host but pullable{source}", f"{image} pullable"
        )
    if answer.pullable == Pullable.NO:
        return Finding(
            Level.BLOCKED, f"image cannot be pulled: {answer.detail}{source}", f"{image} gone"
        )
    return Finding(
        Level.RISKY, f"image {image} not verified: {answer.detail}", f"{image} not verified"
    )


def setup_findings(container: dict[str, Any], replicas: list[dict[str, Any]]) -> list[Finding]:
    """Say what the container's setup means for the rollback: `--rm`, a compose service.

    `replicas` are the containers of its compose service (itself included), if any.
    """
    name = container["Name"].lstrip("/")
    labels = (container.get("Config") or {}).get("Labels") or {}
    findings = []
    if (container.get("HostConfig") or {}).get("AutoRemove"):
        text = (
            f"container {name} runs with --rm: the engine removes it when it stops, so its "
            "successor is created first and holds its volumes, and switching back recreates "
            "it from its recorded settings"
        )
        findings.append(Finding(Level.OK, text, "runs with --rm"))
    project, service = labels.get(COMPOSE_PROJECT), labels.get(COMPOSE_SERVICE)
    if project and service:
        image = (container.get("Config") or {}).get("Image")
        text = (
            f"container {name} is service {service} of compose project {project}: its compose "
            f"file still names {image}, and `docker compose up` recreates the service from it "
            "when the service's configuration or image digest changes (or with "
            "--force-recreate), undoing the rollback: pin the version rolled back to in the "
            "compose file"
        )
        findings.append(Finding(Level.RISKY, text, f"compose service {project}/{service}"))
        others = sorted(c["Names"][0].lstrip("/") for c in replicas if c["Id"] != container["Id"])
        if others:
            text = (
                f"compose service {service} has {len(others) + 1} containers: only {name} is "
                f"swapped, {', '.join(others)} keep their image"
            )
            findings.append(Finding(Level.RISKY, text, f"replicas {', '.join(others)}"))
    return findings


def docker_evidence(target: DockerTarget, ref: str | None) -> list[Finding]:
    """Weigh the checks; for an image to be pulled, ask its registry; say the setup."""
    findings = []
    for check in target.checks(ref):
        if check.ok and check.name == IMAGE_CHECK and PULLED in check.detail:
            findings.append(pull_finding(check.detail.split(PULLED, 1)[0]))
        else:
            findings.append(_weigh(check))
    return findings + target.setup_findings()
