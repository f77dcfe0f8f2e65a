"""People's real names for user ids, asked of Slack (`users.info`) and cached.

Text Slack renders uses mentions (`<@U…>`); a file people download (the RCA)
needs names. `users.info` answers `user.real_name` and `user.profile.real_name`
/ `display_name` (https://api.slack.com/methods/users.info); a name is kept for
an hour, so an RCA with twenty events asks once per person. When Slack cannot
answer (user_not_found, missing scope, a dropped connection) the id itself is
the name and the RCA is still written; a failure is not cached, so the next
file tries again.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

NAME_CACHE_SECONDS = 3600.0


class Names:
    """`names(user_id)`: the person's real name, or the id when Slack cannot say."""

    def __init__(
        self,
        client: WebClient,
        *,
        keep: float = NAME_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keep = keep
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, str]] = {}

    def __call__(self, user_id: str) -> str:
        now = self.clock()
        with self._lock:
            hit = self._known.get(user_id)
        if hit is not None and now - hit[0] < self.keep:
            return hit[1]
        try:
            user = self.client.users_info(user=user_id)["user"] or {}
        except (SlackApiError, OSError, http.client.HTTPException) as exc:
            log.warning("users.info %s failed (%s); naming them by id", user_id, exc)
            return user_id
        profile = user.get("profile") or {}
        name = str(
            user.get("real_name")
            or profile.get("real_name")
            or profile.get("display_name")
            or user.get("name")
            or user_id
        )
        with self._lock:
            self._known[user_id] = (now, name)
        return name
