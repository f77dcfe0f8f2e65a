"""What handlers share to call the application layer: the flows, and who is in which group.

`flows_for(deps)` is the one `bot.application.flows.Flows` of the handlers' `Deps`, built by
the composition root (`bot.app`) with the incident thread as its Slack side. `Groups`
answers which configured approver groups a user is in: Slack knows
(`usergroups.users.list`), so it is asked here and cached for a minute, and the flows are
told the answer.
"""

from __future__ import annotations

import threading
import time

from bot.application.drills import Drills
from bot.application.flows import Flows
from bot.config import Environment
from handlers.deps import Deps

GROUP_CACHE_SECONDS = 60.0


def flows_for(deps: Deps) -> Flows:
    """The application layer the composition root built for these handlers (`bot.app`), with
    the incident thread as its Slack side: the same one for every listener, monitoring and
    drills."""
    if deps.flows is None:
        raise RuntimeError("the composition root builds the flows before any listener runs")
    return deps.flows


def drills_for(deps: Deps) -> Drills:
    """The drills' use cases the composition root built on the same flows."""
    if deps.drills is None:
        raise RuntimeError("the composition root builds the drills before any listener runs")
    return deps.drills


class Groups:
    """Which configured approver groups a user belongs to, asked of Slack and cached."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._lock = threading.Lock()
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    def of(self, environment: str, user: str) -> frozenset[str]:
        """Return the approver groups of `environment` that `user` is in."""
        env: Environment = self.deps.config.environment(environment)
        return frozenset(g for g in env.approvers.groups if user in self._users(g))

    def _users(self, group: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._members.get(group)
        if hit and now - hit[0] < GROUP_CACHE_SECONDS:
            return hit[1]
        users = frozenset(self.deps.client.usergroups_users_list(usergroup=group)["users"])
        with self._lock:
            self._members[group] = (now, users)
        return users
