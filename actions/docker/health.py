"""Whether a swapped-in container is healthy: running steadily, its own check, its URL.

Healthy means all of: the container stays running, not restarting, not OOM-killed and
with its restart count unchanged for the settle period (a crash-looping image with
`--restart always` is "running" between crashes, and one without a policy exits only
after a moment, so one look right after start proves nothing); its own Docker
healthcheck, when it has one, reports healthy; the configured health URL answers 2xx.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actions import voice
from actions.base import PermanentError
from actions.docker.engine import DockerClient
from actions.docker.params import SWITCH_BACK_RESERVE
from actions.http.health import HEALTH_REQUEST_TIMEOUT, check_health
from actions.http.request import plural

if TYPE_CHECKING:
    from actions.docker.swap import SwapContainer

POLL = 0.25
"""Seconds between looks at the new container while it settles."""
RESTART_GRACE = 5.0
"""Seconds spent catching a restarted container between runs, to read its exit code."""


@dataclass
class Settling:
    """Watching the new container of a swap until it is healthy by every measure."""

    action: SwapContainer
    client: DockerClient
    deadline: float
    """The step's deadline (monotonic); the switch-back's reserve is kept before it."""
    say: Callable[[str], None]
    last_answer: str = "none"

    def verify(self, record: dict[str, Any]) -> None:
        """Wait until the new container is healthy by every measure, or raise PermanentError."""
        action = self.action
        now = time.monotonic()
        deadline = min(self.deadline - SWITCH_BACK_RESERVE, now + action.health_timeout)
        settled_at = now + action.settle
        url_answer = None if action.health_url else "not configured"
        restarted_at: float | None = None
        cadence = voice.Cadence(now)
        while True:
            container = self._new_container(record)
            problem = state_problem(container, restarts=0)
            if problem and problem.startswith("restarted"):
                # Running again after a restart: the engine has reset its exit code, so
                # look a little longer to catch it restarting and name the exit code.
                restarted_at = restarted_at or time.monotonic()
                if time.monotonic() < restarted_at + RESTART_GRACE:
                    time.sleep(POLL / 5)
                    continue
            check = self._own_health(record, container, problem)
            if action.health_url and url_answer is None:
                url_answer = self._probe(str(action.health_url), deadline)
            waiting = [
                *([f"its healthcheck is {check}"] if check not in (None, "healthy") else []),
                *([f"{action.health_url} has not answered 2xx"] if url_answer is None else []),
                *(["it has not run its settle period"] if time.monotonic() < settled_at else []),
            ]
            if not waiting:
                break
            if cadence.due():  # never silent for long
                self.say(f"waiting for {record['name']}: " + "; ".join(waiting))
            if time.monotonic() > deadline:
                raise PermanentError(
                    f"{record['name']} ({action.to_image}) is not healthy in time: "
                    + "; ".join(waiting)
                    + (f" (last answer: {self.last_answer})" if url_answer is None else "")
                )
            time.sleep(POLL)
        self.say(
            f"{record['name']} stayed running for {action.settle:g}s"
            + (f", healthcheck {check}" if check else "")
            + (f", {action.health_url} answered {url_answer}" if action.health_url else "")
        )

    def _new_container(self, record: dict[str, Any]) -> dict[str, Any]:
        """Inspect the new container, or raise PermanentError saying how it went."""
        container = self.client.container(record["new_id"])
        if container is None and record.get("autoremove"):
            code = self.client.exit_code(record["new_id"])
            raise PermanentError(
                f"{record['name']} ({self.action.to_image}) exited"
                + (f", exit code {code}," if code is not None else "")
                + " and the engine removed it (it runs with --rm)"
            )
        if container is None:
            raise PermanentError(f"the new container {record['name']} disappeared")
        return container

    def _own_health(
        self, record: dict[str, Any], container: dict[str, Any], problem: str | None
    ) -> str | None:
        """Raise if the container failed or its own healthcheck says unhealthy; else its status."""
        if problem:
            raise PermanentError(f"{record['name']} ({self.action.to_image}) {problem}")
        check: str | None = (container["State"].get("Health") or {}).get("Status")
        if check == "unhealthy":
            raise PermanentError(
                f"{record['name']} ({self.action.to_image}) is unhealthy by its own healthcheck: "
                f"{last_check(container)}"
            )
        return check

    def _probe(self, url: str, deadline: float) -> str | None:
        timeout = max(0.5, min(HEALTH_REQUEST_TIMEOUT, deadline - time.monotonic()))
        health = check_health(url, timeout=timeout)
        self.last_answer = health.answer
        return (
            (str(health.status) if health.status is not None else health.answer)
            if health.ok
            else None
        )


def state_problem(container: dict[str, Any], *, restarts: int | None) -> str | None:
    """Name what is wrong with a container's state, or None when it runs steadily."""
    state = container["State"]
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return f"was OOM-killed (exit code {code})"
    count = container.get("RestartCount", 0)
    if state.get("Restarting"):
        again = (
            f" (restarted {plural(count - restarts, 'time')})"
            if restarts is not None and count
            else ""
        )
        return f"is restarting, exit code {code}{again}"
    if not state.get("Running"):
        return f"is {state.get('Status')}, exit code {code}"
    if restarts is not None and count != restarts:
        times = plural(count - restarts, "time")
        return f"restarted {times} (the engine resets the exit code on restart)"
    return None


def last_check(container: dict[str, Any]) -> str:
    """The healthcheck's last answer: its exit code and output."""
    log = (container["State"].get("Health") or {}).get("Log") or []
    if not log:
        return "no check output"
    last = log[-1]
    return f"exit code {last.get('ExitCode')}: {str(last.get('Output') or '').strip()[:200]}"
