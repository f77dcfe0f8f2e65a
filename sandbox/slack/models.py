"""What the fake Slack keeps, as frozen snapshots tests and the demo read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKEN = "xoxb-0000000000-sandbox-token"


@dataclass(frozen=True)
class Workspace:
    """The team and the bot the fake pretends to be."""

    team_id: str = "T0SANDBOX"
    team_name: str = "Sandbox"
    domain: str = "sandbox"
    bot_user_id: str = "U0BOT"
    bot_id: str = "B0BOT"
    bot_name: str = "rollback-bot"
    app_id: str = "A0SANDBOX"
    scopes: tuple[str, ...] = (
        "chat:write",
        "commands",
        "channels:manage",
        "channels:join",
        "channels:read",
        "channels:history",
        "files:write",
        "users:read",
        "usergroups:read",
        "team:read",
    )

    @property
    def url(self) -> str:
        """Return the workspace URL as auth.test gives it."""
        return f"https://{self.domain}.slack.com/"


@dataclass(frozen=True)
class Call:
    """One Web API call as received, with what the fake answered."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Return whether the fake answered `ok: true`."""
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        """Return the error code answered, if any."""
        return self.response.get("error")


@dataclass(frozen=True)
class Message:
    """A channel message as it currently reads; `thread_ts` is the parent's ts for a reply."""

    channel: str
    ts: str
    text: str
    user: str
    blocks: tuple[dict[str, Any], ...] = ()
    attachments: tuple[dict[str, Any], ...] = ()
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    files: tuple[str, ...] = ()
    reply_broadcast: bool = False
    edits: int = 0


@dataclass(frozen=True)
class Ephemeral:
    """A message only `user` saw."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: tuple[dict[str, Any], ...] = ()
    thread_ts: str | None = None


@dataclass(frozen=True)
class UploadedFile:
    """A file from files.getUploadURLExternal, its uploaded bytes and where it was shared."""

    id: str
    name: str
    length: int
    title: str = ""
    content: bytes = b""
    uploaded: bool = False
    completed: bool = False
    channels: tuple[str, ...] = ()
    thread_ts: str | None = None
    initial_comment: str | None = None

    @property
    def channel(self) -> str | None:
        """Return the first channel the file was shared in."""
        return self.channels[0] if self.channels else None

    @property
    def text(self) -> str:
        """Return the content decoded as UTF-8."""
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class View:
    """A modal or App Home view in its latest version."""

    id: str
    hash: str
    view: dict[str, Any]
    trigger_id: str | None = None
    external_id: str | None = None
    user_id: str | None = None
    root_view_id: str | None = None
    previous_view_id: str | None = None
    updates: int = 0

    @property
    def type(self) -> str:
        """Return `modal` or `home`."""
        return str(self.view.get("type", ""))

    @property
    def callback_id(self) -> str | None:
        """Return the view's callback_id."""
        return self.view.get("callback_id")

    @property
    def private_metadata(self) -> str | None:
        """Return the view's private_metadata."""
        return self.view.get("private_metadata")

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """Return the view's blocks."""
        return list(self.view.get("blocks", []))


@dataclass(frozen=True)
class Channel:
    """A conversation: public or private channel, or a direct message with one user."""

    id: str
    name: str
    members: tuple[str, ...] = ()
    is_private: bool = False
    is_im: bool = False
    creator: str = ""
    created: int = 0


@dataclass(frozen=True)
class User:
    """A workspace member."""

    id: str
    name: str
    real_name: str
    email: str | None = None
    is_bot: bool = False
    tz: str = "UTC"


@dataclass(frozen=True)
class UserGroup:
    """A user group (@handle) and its members."""

    id: str
    handle: str
    users: tuple[str, ...]
    name: str = ""


@dataclass(frozen=True)
class Invite:
    """One user invited to one channel by the bot."""

    channel: str
    user: str
