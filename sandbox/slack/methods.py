"""The Web API methods, one `_api_<method with dots as underscores>` each, found by name.

Each takes the parsed `Args` under the state lock and returns the fields of an `ok: true`
answer, or raises `ApiError` with Slack's error code.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandbox.slack.models import Channel, Ephemeral, Invite, Message, UploadedFile
from sandbox.slack.state import SlackState
from sandbox.slack.wire import ApiError, Args, channel_name_error, check_view


class SlackMethods(SlackState):
    """The workspace with the Web API methods that read and change it."""

    def _api_auth_test(self, args: Args) -> dict[str, Any]:
        ws = self.workspace
        return {
            "url": ws.url,
            "team": ws.team_name,
            "user": ws.bot_name,
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }

    def _api_chat_postMessage(self, args: Args) -> dict[str, Any]:
        channel = self._destination(args.need("channel", "channel_not_found"))
        message = Message(
            channel.id,
            self._clock.next_ts(),
            user=self.workspace.bot_user_id,
            thread_ts=self._thread_parent(channel.id, args.text("thread_ts")),
            metadata=args.values.get("metadata"),
            reply_broadcast=args.flag("reply_broadcast"),
            **self._content(args),
        )
        self._messages.setdefault(channel.id, []).append(message)
        return {"channel": channel.id, "ts": message.ts, "message": self._message_json(message)}

    def _api_chat_update(self, args: Args) -> dict[str, Any]:
        channel = self._conversation(args.text("channel"))
        index, old = self._find(channel.id, args.text("ts"), "message_not_found")
        if old.user != self.workspace.bot_user_id:
            raise ApiError("cant_update_message")
        new = replace(old, edits=old.edits + 1, **self._content(args, previous=old))
        if "metadata" in args.values:
            new = replace(new, metadata=args.values["metadata"])
        self._messages[channel.id][index] = new
        return {
            "channel": channel.id,
            "ts": new.ts,
            "text": new.text,
            "message": self._message_json(new),
        }

    def _api_chat_postEphemeral(self, args: Args) -> dict[str, Any]:
        channel = self._destination(args.need("channel", "channel_not_found"))
        user = args.text("user")
        if user not in self._users:
            raise ApiError("user_not_in_channel")
        content = self._content(args)
        ephemeral = Ephemeral(
            channel.id,
            user,
            self._clock.next_ts(),
            content["text"],
            blocks=content["blocks"],
            thread_ts=args.text("thread_ts"),
        )
        self._ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.ts}

    def _api_chat_getPermalink(self, args: Args) -> dict[str, Any]:
        channel = self._conversation(args.text("channel"))
        _, message = self._find(channel.id, args.text("message_ts"), "message_not_found")
        link = f"{self.workspace.url}archives/{channel.id}/p{message.ts.replace('.', '')}"
        if message.thread_ts:
            link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def _api_views_open(self, args: Args) -> dict[str, Any]:
        trigger_id = self._exchange(args)
        return self._store_view(self._new_view(args, trigger_id=trigger_id))

    def _api_views_push(self, args: Args) -> dict[str, Any]:
        trigger_id = self._exchange(args)
        top = next(reversed(list(self._views.values())), None)
        stack = top if top is not None and top.type == "modal" else None
        root, previous = (stack.root_view_id, stack.id) if stack else (None, None)
        return self._store_view(
            self._new_view(
                args, trigger_id=trigger_id, root_view_id=root, previous_view_id=previous
            )
        )

    def _api_views_update(self, args: Args) -> dict[str, Any]:
        view_id, external_id = args.text("view_id"), args.text("external_id")
        if not view_id and not external_id:
            raise ApiError("invalid_arguments")
        by_external = (v for v in self._views.values() if v.external_id == external_id)
        old = self._views.get(view_id) if view_id else next(by_external, None)
        if old is None:
            raise ApiError("not_found")
        expected = args.text("hash")
        if expected is not None and expected != old.hash:
            raise ApiError("hash_conflict")
        content = check_view(args.values.get("view"))
        new = replace(old, view=content, hash=self._new_hash(), updates=old.updates + 1)
        return self._store_view(new)

    def _api_views_publish(self, args: Args) -> dict[str, Any]:
        user_id = args.need("user_id", "invalid_arguments")
        old = self._views.get(self._homes.get(user_id, ""))
        expected = args.text("hash")
        if old and expected is not None and expected != old.hash:
            raise ApiError("hash_conflict")
        new = self._new_view(args, trigger_id=None, user_id=user_id)
        if old:
            new = replace(new, id=old.id, root_view_id=old.id, updates=old.updates + 1)
        self._homes[user_id] = new.id
        return self._store_view(new)

    def _api_conversations_create(self, args: Args) -> dict[str, Any]:
        name = args.text("name") or ""
        error = channel_name_error(name) or ("name_taken" if self._named(name) else None)
        if error:
            raise ApiError(error)
        channel = self.add_channel(name, is_private=args.flag("is_private"))
        return {"channel": self._channel_json(channel)}

    def _api_conversations_invite(self, args: Args) -> dict[str, Any]:
        channel = self._conversation(args.text("channel"))
        if channel.is_im:
            raise ApiError("method_not_supported_for_channel_type")
        if self.workspace.bot_user_id not in channel.members:
            raise ApiError("not_in_channel")
        users = args.items("users")
        if not users:
            raise ApiError("no_user")
        errors = [(u, e) for u in users if (e := self._invite_error(channel, u))]
        if errors and not args.flag("force"):
            raise ApiError(
                errors[0][1], errors=[{"user": u, "ok": False, "error": e} for u, e in errors]
            )
        valid = [u for u in users if u not in dict(errors)]
        self._channels[channel.id] = replace(channel, members=(*channel.members, *valid))
        self._invites.extend(Invite(channel.id, u) for u in valid)
        answer: dict[str, Any] = {"channel": self._channel_json(self._channels[channel.id])}
        if errors:
            answer["errors"] = [{"user": u, "ok": False, "error": e} for u, e in errors]
        return answer

    def _invite_error(self, channel: Channel, user_id: str) -> str | None:
        if user_id == self.workspace.bot_user_id:
            return "cant_invite_self"
        if user_id not in self._users:
            return "user_not_found"
        return "already_in_channel" if user_id in channel.members else None

    def _api_conversations_join(self, args: Args) -> dict[str, Any]:
        channel = self._conversation(args.text("channel"))
        if channel.is_private or channel.is_im:
            raise ApiError("method_not_supported_for_channel_type")
        bot = self.workspace.bot_user_id
        if bot in channel.members:
            warning = "already_in_channel"
            answer = {"warning": warning, "response_metadata": {"warnings": [warning]}}
            return {"channel": self._channel_json(channel), **answer}
        self._channels[channel.id] = replace(channel, members=(*channel.members, bot))
        return {"channel": self._channel_json(self._channels[channel.id])}

    def _api_conversations_info(self, args: Args) -> dict[str, Any]:
        return {"channel": self._channel_json(self._conversation(args.text("channel")))}

    def _api_conversations_replies(self, args: Args) -> dict[str, Any]:
        channel = self._conversation(args.text("channel"))
        parent = self._thread_parent(channel.id, args.need("ts", "thread_not_found"))
        thread = [m for m in self._messages[channel.id] if parent in (m.ts, m.thread_ts)]
        messages = [self._thread_json(channel.id, thread[0])]
        messages += [self._message_json(m) for m in thread[1:]]
        return {"messages": messages, "has_more": False}

    def _api_conversations_history(self, args: Args) -> dict[str, Any]:
        channel = self._conversation(args.text("channel"))
        shown = [
            m
            for m in self._messages.get(channel.id, [])
            if m.thread_ts is None or m.reply_broadcast
        ]
        shown.reverse()
        limit = args.integer("limit", default=100)
        page = [self._thread_json(channel.id, m) for m in shown[:limit]]
        return {"messages": page, "has_more": len(shown) > limit}

    def _api_files_getUploadURLExternal(self, args: Args) -> dict[str, Any]:
        name = args.need("filename", "invalid_arguments")
        args.need("length", "invalid_arguments")
        file = UploadedFile(self._new_id("F"), name, args.integer("length", default=0))
        self._files[file.id] = file
        return {"file_id": file.id, "upload_url": f"{self.upload_prefix}{file.id}"}

    def _receive_upload(self, file_id: str, content: bytes) -> bool:
        """Store uploaded bytes; False when the upload URL was never issued."""
        with self._lock:
            file = self._files.get(file_id)
            if file is None:
                return False
            self._files[file_id] = replace(file, content=content, uploaded=True)
            return True

    def _api_files_completeUploadExternal(self, args: Args) -> dict[str, Any]:
        entries = args.objects("files")
        if not entries:
            raise ApiError("invalid_arguments")
        files = [self._files.get(str(e.get("id"))) for e in entries]
        if any(f is None or not f.uploaded for f in files):
            raise ApiError("file_not_found")
        channel_ids = args.items("channels") or [c for c in [args.text("channel_id")] if c]
        channels = [self._destination(c) for c in channel_ids]
        thread_ts = (
            self._thread_parent(channels[0].id, args.text("thread_ts")) if channels else None
        )
        shared = [
            replace(
                f,
                title=str(e.get("title") or f.name),
                completed=True,
                channels=tuple(c.id for c in channels),
                thread_ts=thread_ts,
                initial_comment=args.text("initial_comment"),
            )
            for f, e in zip(files, entries, strict=True)
            if f is not None
        ]
        self._files.update({f.id: f for f in shared})
        for channel in channels:
            self._messages.setdefault(channel.id, []).append(
                Message(
                    channel.id,
                    self._clock.next_ts(),
                    args.text("initial_comment") or "",
                    self.workspace.bot_user_id,
                    thread_ts=thread_ts,
                    files=tuple(f.id for f in shared),
                )
            )
        return {"files": [self._file_json(f) for f in shared]}

    def _api_users_info(self, args: Args) -> dict[str, Any]:
        user = self._users.get(args.text("user") or "")
        if user is None:
            raise ApiError("user_not_found")
        return {"user": self._user_json(user)}

    def _api_usergroups_users_list(self, args: Args) -> dict[str, Any]:
        group = self._usergroups.get(args.text("usergroup") or "")
        if group is None:
            raise ApiError("no_such_subteam")
        return {"users": list(group.users)}

    def _api_usergroups_list(self, args: Args) -> dict[str, Any]:
        groups = []
        for group in self._usergroups.values():
            data: dict[str, Any] = {"id": group.id, "handle": group.handle, "name": group.name}
            if args.flag("include_users"):
                data["users"] = list(group.users)
            groups.append(data)
        return {"usergroups": groups}

    def _api_team_info(self, args: Args) -> dict[str, Any]:
        ws = self.workspace
        team = {"id": ws.team_id, "name": ws.team_name, "domain": ws.domain, "icon": {}}
        return {"team": team}
