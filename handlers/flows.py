"""What handlers share to call the application layer: the flows, and who is in which group.

`flows_for(deps)` is the one `bot.application.flows.Flows` of the handlers' `Deps`, with
the incident thread as its Slack side. `Groups` answers which configured approver
groups a user is in: Slack knows (`usergroups.users.list`), so it is asked
here and cached for a minute, and the flows are told the answer.
"""

from __future__ import annotations

import threading
import time

from bot.application.flows import Flows
from bot.config import Environment
from handlers.deps import Deps
from handlers.thread import IncidentThread

GROUP_CACHE_SECONDS = 60.0


_BUILDING = threading.Lock()


def flows_for(deps: Deps) -> Flows:
    """The application layer of `deps`, reporting into Slack through the incident thread:
    built once, on first use, and the same one for every listener, monitoring and drills."""
    with _BUILDING:
        if deps.flows is None:
            deps.flows = Flows(
                store=deps.store,
                workflow=deps.workflow,
                config=deps.config,
                planner=deps.planner,
                thread=IncidentThread(deps),
                wake_runner=deps.wake_runner,
                wake_outbox=deps.wake_outbox,
            )
        return deps.flows


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
