"""The workspace as Slack keeps it: seeding, readers for tests, and Slack's JSON shapes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import datetime
from itertools import count
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.slack.models import (
    Channel,
    Ephemeral,
    Invite,
    Message,
    UploadedFile,
    User,
    UserGroup,
    View,
    Workspace,
)
from sandbox.slack.wire import (
    MAX_MESSAGE_BLOCKS,
    MAX_MESSAGE_TEXT,
    ApiError,
    Args,
    channel_name_error,
    check_blocks,
    check_view,
    readable,
)


class Clock:
    """Message timestamps: unique and increasing, in Slack's `seconds.micros` form."""

    def __init__(self) -> None:
        self._last = 0

    def next_ts(self) -> str:
        """Return a ts later than every ts given before."""
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"


class SlackState:
    """A workspace as Slack keeps it: what tests seed, what they read, and Slack's JSON shapes."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace or Workspace()
        self._lock = threading.RLock()
        self._ids = count(1)
        self._clock = Clock()
        self._users: dict[str, User] = {}
        self._usergroups: dict[str, UserGroup] = {}
        self._channels: dict[str, Channel] = {}
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[Ephemeral] = []
        self._files: dict[str, UploadedFile] = {}
        self._views: dict[str, View] = {}
        self._homes: dict[str, str] = {}
        self._triggers: set[str] = set()
        self._invites: list[Invite] = []
        self.upload_prefix = "https://files.slack.com/upload/v1/"
        ws = self.workspace
        self.add_user(ws.bot_user_id, name=ws.bot_name, real_name=ws.bot_name, is_bot=True)
        self.add_channel("general")

    # ---- seeding -------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        *,
        name: str,
        real_name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
    ) -> User:
        """Add a workspace member."""
        user = User(user_id, name, real_name or name, email=email, is_bot=is_bot)
        with self._lock:
            self._users[user_id] = user
        return user

    def add_usergroup(self, usergroup_id: str, *, handle: str, users: Iterable[str]) -> UserGroup:
        """Add a user group with its members."""
        group = UserGroup(usergroup_id, handle, tuple(users), name=handle)
        with self._lock:
            self._usergroups[usergroup_id] = group
        return group

    def add_channel(
        self,
        name: str,
        *,
        channel_id: str | None = None,
        is_private: bool = False,
        members: Iterable[str] = (),
        bot_is_member: bool = True,
    ) -> Channel:
        """Add a channel the bot is (by default) a member of."""
        bot = [self.workspace.bot_user_id] if bot_is_member else []
        with self._lock:
            error = channel_name_error(name) or ("name_taken" if self._named(name) else None)
            if error:
                raise ValueError(f"cannot add channel {name!r}: {error}")
            channel = Channel(
                channel_id or self._new_id("C"),
                name,
                members=tuple(dict.fromkeys([*bot, *members])),
                is_private=is_private,
                creator=self.workspace.bot_user_id,
                created=int(time.time()),
            )
            self._channels[channel.id] = channel
        return channel

    def add_message(
        self, channel: str, *, user: str, text: str, thread_ts: str | None = None
    ) -> Message:
        """Add a message a person wrote, e.g. a reply in an incident thread."""
        with self._lock:
            channel_id = self.channel(channel).id
            try:
                parent = self._thread_parent(channel_id, thread_ts)
            except ApiError as err:
                raise KeyError(f"no message {thread_ts} in {channel}") from err
            message = Message(channel_id, self._clock.next_ts(), text, user, thread_ts=parent)
            self._messages.setdefault(channel_id, []).append(message)
        return message

    # ---- readers -------------------------------------------------------------------------

    def channel(self, ref: str) -> Channel:
        """Return a channel by id, name or #name."""
        with self._lock:
            found = self._channels.get(ref) or self._named(ref.lstrip("#"))
        if found is None:
            raise KeyError(f"no channel {ref!r}")
        return found

    def channels(self) -> list[Channel]:
        """Return every channel, in creation order."""
        with self._lock:
            return list(self._channels.values())

    def messages(self, channel: str) -> list[Message]:
        """Return the channel's messages and replies as they read now, oldest first."""
        channel_id = self.channel(channel).id
        with self._lock:
            return list(self._messages.get(channel_id, []))

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Return a thread: its parent, then its replies oldest first."""
        return [m for m in self.messages(channel) if ts in (m.ts, m.thread_ts)]

    def message(self, channel: str, ts: str) -> Message:
        """Return one message as it reads now."""
        for message in self.messages(channel):
            if message.ts == ts:
                return message
        raise KeyError(f"no message {ts} in {channel}")

    def ephemerals(self, channel: str | None = None) -> list[Ephemeral]:
        """Return ephemeral messages, optionally only those in one channel."""
        channel_id = self.channel(channel).id if channel else None
        with self._lock:
            return [e for e in self._ephemerals if channel_id in (None, e.channel)]

    def files(self) -> list[UploadedFile]:
        """Return the files whose upload was completed."""
        with self._lock:
            return [f for f in self._files.values() if f.completed]

    def views(self) -> list[View]:
        """Return every opened, pushed or published view in its latest version."""
        with self._lock:
            return list(self._views.values())

    def view(self, view_id: str) -> View:
        """Return one view by id."""
        with self._lock:
            return self._views[view_id]

    def home(self, user_id: str) -> View | None:
        """Return the App Home view published for a user."""
        with self._lock:
            view_id = self._homes.get(user_id)
            return self._views[view_id] if view_id else None

    def invites(self) -> list[Invite]:
        """Return every successful invitation, in order."""
        with self._lock:
            return list(self._invites)

    def user(self, user_id: str) -> User:
        """Return one workspace member."""
        with self._lock:
            return self._users[user_id]

    def transcript(self, channel: str) -> str:
        """Render the channel as a person would read it: messages, replies indented, files."""
        with self._lock:
            names = {f.id: f.name for f in self._files.values()}
        lines: list[str] = []
        for message in self.messages(channel):
            indent = "    " if message.thread_ts else ""
            edited = " (edited)" if message.edits else ""
            files = "".join(f" [file: {names[f]}]" for f in message.files if f in names)
            lines.append(f"{indent}[{message.ts}]{edited} {readable(message)}{files}")
        return "\n".join(lines)

    # ---- internals -----------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):010X}"

    def _named(self, name: str) -> Channel | None:
        return next((c for c in self._channels.values() if c.name == name and not c.is_im), None)

    def _conversation(self, ref: str | None) -> Channel:
        """Resolve a channel id, as most methods accept, or answer channel_not_found."""
        found = self._channels.get(ref or "")
        if found is None:
            raise ApiError("channel_not_found")
        return found

    def _destination(self, ref: str) -> Channel:
        """Resolve what chat.post* accept: an id, a name, #name, or a user id (a DM)."""
        if ref in self._users:
            return self._direct_message(ref)
        found = self._channels.get(ref) or self._named(ref.lstrip("#"))
        if found is None:
            raise ApiError("channel_not_found")
        if self.workspace.bot_user_id not in found.members:
            raise ApiError("not_in_channel")
        return found

    def _direct_message(self, user_id: str) -> Channel:
        channel_id = "D" + user_id[1:]
        if channel_id not in self._channels:
            members = (self.workspace.bot_user_id, user_id)
            self._channels[channel_id] = Channel(channel_id, user_id, members, is_im=True)
        return self._channels[channel_id]

    def _find(self, channel_id: str, ts: str | None, error: str) -> tuple[int, Message]:
        for index, message in enumerate(self._messages.get(channel_id, [])):
            if message.ts == ts:
                return index, message
        raise ApiError(error)

    def _thread_parent(self, channel_id: str, thread_ts: str | None) -> str | None:
        """Return the parent ts a reply goes under (a reply's ts means its parent's thread)."""
        if thread_ts is None:
            return None
        _, parent = self._find(channel_id, thread_ts, "thread_not_found")
        return parent.thread_ts or parent.ts

    def _content(self, args: Args, *, previous: Message | None = None) -> dict[str, Any]:
        """Return text, blocks and attachments to store; absent fields keep previous values."""
        text = args.text("text")
        blocks = args.objects("blocks") if "blocks" in args.values else None
        attachments = args.objects("attachments") if "attachments" in args.values else None
        if text is None and not blocks and not attachments:
            raise ApiError("no_text")
        if len(text or "") > MAX_MESSAGE_TEXT:
            raise ApiError("msg_too_long")
        if blocks is not None:
            check_blocks(blocks, limit=MAX_MESSAGE_BLOCKS, error="invalid_blocks")
        kept = previous or Message("", "", "", "")
        return {
            "text": text if text is not None else kept.text,
            "blocks": blocks if blocks is not None else kept.blocks,
            "attachments": attachments if attachments is not None else kept.attachments,
        }

    def _message_json(self, message: Message) -> dict[str, Any]:
        """Return a message the way the Web API shows it."""
        ws = self.workspace
        data: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "team": ws.team_id,
            "text": message.text,
            "ts": message.ts,
        }
        if message.user == ws.bot_user_id:
            data.update(bot_id=ws.bot_id, app_id=ws.app_id)
        optional = {
            "blocks": list(message.blocks),
            "attachments": list(message.attachments),
            "thread_ts": message.thread_ts,
            "metadata": message.metadata,
            "files": [self._file_json(self._files[f]) for f in message.files],
        }
        data.update({k: v for k, v in optional.items() if v})
        if message.edits:
            data["edited"] = {"user": message.user, "ts": message.ts}
        return data

    def _thread_json(self, channel_id: str, message: Message) -> dict[str, Any]:
        """Return a message with the thread fields Slack adds to a parent."""
        data = self._message_json(message)
        replies = [m for m in self._messages[channel_id] if m.thread_ts == message.ts]
        if replies:
            data.update(
                thread_ts=message.ts,
                reply_count=len(replies),
                latest_reply=replies[-1].ts,
                reply_users=sorted({m.user for m in replies}),
            )
        return data

    def _channel_json(self, channel: Channel) -> dict[str, Any]:
        return {
            "id": channel.id,
            "name": channel.name,
            "name_normalized": channel.name,
            "is_channel": not channel.is_im and not channel.is_private,
            "is_group": channel.is_private,
            "is_im": channel.is_im,
            "is_private": channel.is_private or channel.is_im,
            "is_archived": False,
            "is_general": channel.name == "general",
            "is_member": self.workspace.bot_user_id in channel.members,
            "created": channel.created,
            "creator": channel.creator,
            "num_members": len(channel.members),
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }

    def _user_json(self, user: User) -> dict[str, Any]:
        # The user object of users.info's typical success response
        # (https://api.slack.com/methods/users.info, mirrored in
        # aki017/slack-api-docs methods/users.info.md, and the User / Profile types of
        # @slack/web-api's UsersInfoResponse): real_name at the top and in the profile,
        # display_name and the *_normalized forms, the zone as tz, tz_label and tz_offset.
        zone = ZoneInfo(user.tz)
        offset = datetime.now(zone).utcoffset()
        profile = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.name,
            "display_name_normalized": user.name,
            "email": user.email,
        }
        return {
            "id": user.id,
            "team_id": self.workspace.team_id,
            "name": user.name,
            "real_name": user.real_name,
            "deleted": False,
            "is_bot": user.is_bot,
            "tz": user.tz,
            "tz_label": datetime.now(zone).tzname() or user.tz,
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "profile": {k: v for k, v in profile.items() if v is not None},
        }

    def _file_json(self, file: UploadedFile) -> dict[str, Any]:
        return {
            "id": file.id,
            "name": file.name,
            "title": file.title,
            "size": len(file.content),
            "mimetype": "text/plain",
            "user": self.workspace.bot_user_id,
            "channels": list(file.channels),
            "permalink": f"{self.workspace.url}files/{self.workspace.bot_user_id}/{file.id}",
        }

    def _view_json(self, view: View) -> dict[str, Any]:
        return {
            **view.view,
            "id": view.id,
            "team_id": self.workspace.team_id,
            "hash": view.hash,
            "state": {"values": {}},
            "external_id": view.external_id or "",
            "root_view_id": view.root_view_id,
            "previous_view_id": view.previous_view_id,
            "app_id": self.workspace.app_id,
            "bot_id": self.workspace.bot_id,
        }

    def _new_hash(self) -> str:
        return f"{int(time.time())}.{next(self._ids):08d}"

    def _exchange(self, args: Args) -> str:
        """Use a trigger_id once, as Slack allows."""
        trigger_id = args.need("trigger_id", "invalid_trigger_id")
        if trigger_id in self._triggers:
            raise ApiError("exchanged_trigger_id")
        self._triggers.add(trigger_id)
        return trigger_id

    def _store_view(self, view: View) -> dict[str, Any]:
        self._views[view.id] = view
        return {"view": self._view_json(view)}

    def _new_view(self, args: Args, *, trigger_id: str | None, **links: str | None) -> View:
        content = check_view(args.values.get("view"))
        external_id = content.get("external_id")
        if external_id and any(v.external_id == external_id for v in self._views.values()):
            raise ApiError("duplicate_external_id")
        view_id = self._new_id("V")
        return View(
            view_id,
            self._new_hash(),
            content,
            trigger_id=trigger_id,
            external_id=external_id,
            root_view_id=links.get("root_view_id") or view_id,
            previous_view_id=links.get("previous_view_id"),
            user_id=links.get("user_id"),
        )
