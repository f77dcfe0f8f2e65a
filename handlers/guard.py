"""`/rollback clear <target> <env> <version> <reason>`: an approver clears a version marked bad.

A version rolled away from is bad for its target until an approver says why it is safe
again (`bot.application.guard`). The command is checked in its ack (the target, the
version's form, a reason: config and text only); who may clear, and whether the version is
marked, are answered after the ack, once per trigger id like `cancel`. A clearing is said in
the environment's incident channel, with who cleared what and why; a refusal is said to the
person only and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.application.flows import Flows
from bot.application.guard import Guard
from bot.domain.versions import VersionMark
from bot.execution.workflow import Refused
from handlers import text as t
from handlers.errors import tell
from handlers.flows import Groups
from handlers.lazy import Arrivals
from handlers.payloads import Where

log = logging.getLogger(__name__)

USAGE = (
    "`/rollback clear <target> <env> <version> <reason>` clears a version marked bad after a "
    "rollback (approvers), e.g. `/rollback clear app prod v1.2.5 fixed in v1.2.6`"
)


@dataclass(frozen=True)
class Clear:
    """The parsed command: which version of which target, and why it is safe again."""

    target: str
    environment: str
    version: str
    reason: str


def cleared_text(cleared: list[VersionMark], *, user: str, reason: str) -> str:
    """The channel's line: who cleared which version of which target, from which incident."""
    first = cleared[0]
    versions = ", ".join(f"`{t.esc(m.label or m.version)}`" for m in cleared)
    incidents = ", ".join(dict.fromkeys(m.incident_id or "an earlier incident" for m in cleared))
    return (
        f":white_check_mark: {t.user(user)} cleared {versions} of *{t.esc(first.target)}* in "
        f"*{t.esc(first.environment)}* (rolled back from in {t.esc(incidents)}): "
        f"cleared: {t.esc(reason)}. The regression guard now answers ok for it, and the "
        "rollback form may offer it as the default again."
    )


@dataclass(frozen=True)
class Clearing:
    """After the ack (on `deps.later`): clear once per trigger id, say it in the channel."""

    where: Where
    client: WebClient
    key: str
    parsed: Clear
    guard: Guard
    flows: Flows
    groups: Groups
    arrivals: Arrivals
    what: str
    changed: threading.Event
    """Set once a version is cleared: the home tabs drop it (`Deps.home.changed`)."""

    def __call__(self) -> None:
        received = self.arrivals.record(self.flows, self.key)
        if not received.first:
            tell(self.client, self.where, f":information_source: {received.repeated(self.what)}")
            return
        parsed, user = self.parsed, self.where.user
        try:
            cleared = self.guard.clear(
                environment=parsed.environment,
                target=parsed.target,
                version=parsed.version,
                reason=parsed.reason,
                user=user,
                user_groups=self.groups.of(parsed.environment, user),
            )
        except Refused as exc:
            said = f":warning: Not cleared: {t.esc(exc)}. Nothing changed."
            self.arrivals.done(self.flows, self.key, said)
            tell(self.client, self.where, said)
            return
        reason = cleared[0].cleared_reason or parsed.reason
        self.arrivals.done(self.flows, self.key, f"{parsed.version} was cleared")
        self.changed.set()
        self._announce(cleared_text(cleared, user=user, reason=reason))

    def _announce(self, said: str) -> None:
        channel = self.guard.config.environment(self.parsed.environment).incident_channel
        try:
            self.client.chat_postMessage(channel=channel, text=said)
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("a clearing could not be said in %s (%s)", channel, error)
            tell(self.client, self.where, f"{said}\n(The channel could not be told: {error}.)")
            return
        if self.where.channel != channel:
            tell(self.client, self.where, said)
