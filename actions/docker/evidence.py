"""The reversibility verdict's evidence for a container: the engine, the container, the image.

The pre-rollback checks are weighed (an unreachable engine, a missing
container or an unknown version blocks). An image already on the host is
runnable as it is; one that is not must be pulled by the swap, so its registry
is asked for the manifest first (actions.registry) with the credentials the
swap would send (the bot's Docker config, actions.docker.auth): gone or
refused blocks, unreachable is risky.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actions.base import Check, Finding, Level
from actions.docker.auth import _configs
from actions.registry import Pullable, Reference, check_manifest, credentials

if TYPE_CHECKING:
    from actions.docker.target import DockerTarget

IMAGE_CHECK = "target image at hand"
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


def docker_evidence(target: DockerTarget, ref: str | None) -> list[Finding]:
    """Weigh the checks; for an image to be pulled, ask its registry."""
    findings = []
    for check in target.checks(ref):
        if check.ok and check.name == IMAGE_CHECK and PULLED in check.detail:
            findings.append(pull_finding(check.detail.split(PULLED, 1)[0]))
        else:
            findings.append(_weigh(check))
    return findings
