"""Request arguments and the rules by which Slack refuses them.

Every method sees the same `Args`, built once from the query string and a JSON or form body,
with JSON-encoded fields (`blocks`, `view`, ...) already decoded. The limits are Slack's
documented ones, so the bot's builders are checked against the real rules.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from sandbox.slack.models import Message

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_MODAL_TITLE = 24
MAX_PRIVATE_METADATA = 3000
MAX_CHANNEL_NAME = 80
JSON_FIELDS = ("blocks", "attachments", "view", "files", "metadata")
CHANNEL_NAME_PATTERN = re.compile(r"[a-z0-9_-]+")


class ApiError(Exception):
    """An `ok: false` answer with Slack's error code and any extra fields."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class Args:
    """Request arguments with Slack's conventions: "1"/"true" flags, comma lists."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def text(self, key: str) -> str | None:
        """Return the argument as a string, None when absent or empty."""
        value = self.values.get(key)
        return None if value is None or value == "" else str(value)

    def need(self, key: str, error: str) -> str:
        """Return the argument or answer `error` when it is missing."""
        value = self.text(key)
        if value is None:
            raise ApiError(error)
        return value

    def flag(self, key: str) -> bool:
        """Return a boolean argument."""
        value = self.values.get(key)
        return value is True or str(value).lower() in ("1", "true")

    def integer(self, key: str, *, default: int) -> int:
        """Return a whole-number argument, or answer invalid_arguments."""
        value = self.text(key)
        if value is None:
            return default
        if not value.isdigit():
            raise ApiError("invalid_arguments")
        return int(value)

    def items(self, key: str) -> list[str]:
        """Return a comma-separated (or JSON list) argument as a list."""
        value = self.values.get(key)
        if isinstance(value, list):
            return [str(v) for v in value]
        return [v.strip() for v in str(value or "").split(",") if v.strip()]

    def objects(self, key: str) -> tuple[dict[str, Any], ...]:
        """Return a JSON array argument of objects."""
        value = self.values.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ApiError(f"invalid_{key}")
        return tuple(value)


def parse_args(*, query: str, body: bytes, content_type: str) -> dict[str, Any]:
    """Merge query string and body (JSON or form) and decode JSON-encoded fields."""
    args: dict[str, Any] = _form(query)
    if body and "json" in content_type:
        try:
            decoded = json.loads(body)
        except ValueError as err:
            raise ApiError("invalid_json") from err
        if not isinstance(decoded, dict):
            raise ApiError("invalid_json")
        args.update(decoded)
    elif body:
        args.update(_form(body.decode("utf-8")))
    for key in JSON_FIELDS:
        if isinstance(args.get(key), str) and args[key]:
            try:
                args[key] = json.loads(args[key])
            except ValueError as err:
                raise ApiError(f"invalid_{key}_format") from err
    return args


def _form(encoded: str) -> dict[str, Any]:
    return {k: v[-1] for k, v in parse_qs(encoded, keep_blank_values=True).items()}


def block_text(block: dict[str, Any]) -> str:
    text = block.get("text")
    return str(text.get("text", "")) if isinstance(text, dict) else ""


def check_blocks(blocks: tuple[dict[str, Any], ...], *, limit: int, error: str) -> None:
    """Refuse what Slack refuses: too many blocks, oversize texts, duplicate block_ids."""
    if len(blocks) > limit:
        raise ApiError(error, response_metadata={"messages": [f"more than {limit} blocks"]})
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    if len(ids) != len(set(ids)):
        raise ApiError(error, response_metadata={"messages": ["duplicate block_id"]})
    for block in blocks:
        limit_text = MAX_HEADER_TEXT if block.get("type") == "header" else MAX_SECTION_TEXT
        if "type" not in block or len(block_text(block)) > limit_text:
            raise ApiError(error, response_metadata={"messages": [f"invalid block {block}"]})


def check_view(view: Any) -> dict[str, Any]:
    """Refuse a view Slack would refuse, with the reason in response_metadata."""
    problem = _view_problem(view)
    if problem:
        raise ApiError("invalid_arguments", response_metadata={"messages": [problem]})
    assert isinstance(view, dict)
    return view


def _view_problem(view: Any) -> str | None:
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        return "view must be an object of type modal or home"
    title = view.get("title") or {}
    if view["type"] == "modal" and not 0 < len(str(title.get("text", ""))) <= MAX_MODAL_TITLE:
        return f"modal title must be 1 to {MAX_MODAL_TITLE} characters"
    if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
        return f"private_metadata longer than {MAX_PRIVATE_METADATA} characters"
    try:
        check_blocks(tuple(view.get("blocks", [])), limit=MAX_VIEW_BLOCKS, error="invalid")
    except ApiError as err:
        return str(err.extra["response_metadata"]["messages"][0])
    return None


def channel_name_error(name: str) -> str | None:
    """Return Slack's error for a channel name it would refuse."""
    if not name:
        return "invalid_name_required"
    if len(name) > MAX_CHANNEL_NAME:
        return "invalid_name_maxlength"
    if not CHANNEL_NAME_PATTERN.fullmatch(name):
        return "invalid_name_specials"
    if not re.search(r"[a-z0-9]", name):
        return "invalid_name_punctuation"
    return None


def readable(message: Message) -> str:
    """Flatten a message to the text a person would read."""
    parts = [message.text] if message.text and not message.blocks else []
    for block in message.blocks:
        parts.extend(readable_block(block))
    return " | ".join(p for p in parts if p)


def readable_block(block: dict[str, Any]) -> list[str]:
    texts = [block_text(block)]
    texts += [str(f.get("text", "")) for f in block.get("fields", [])]
    for element in block.get("elements", []):
        label = element.get("text")
        if element.get("type") == "button" and isinstance(label, dict):
            texts.append(f"[{label.get('text', '')}]")
        elif isinstance(label, str):
            texts.append(label)
    return [t for t in texts if t]
