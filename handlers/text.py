"""Slack's text limits and formatting, in one place.

Slack refuses a message whose section text passes 3000 characters, a header
past 150, a button or option label past 75, more than 50 blocks in a message
or 100 in a modal. Everything we build goes through these helpers so nothing
we post is refused for its size; longer content is cut here and attached as
a file by the caller.
"""

from __future__ import annotations

from datetime import datetime

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
LABEL_LIMIT = 75
MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100
CUT_MARK = "… (cut; full text attached)"


def cut(text: str, limit: int, *, mark: str = "…") -> str:
    """Return `text` no longer than `limit`, marked where it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(mark)] + mark


def code(text: str, limit: int = SECTION_LIMIT) -> tuple[str, bool]:
    """Wrap `text` in a code block within `limit`; say whether it was cut."""
    fence = "```"
    room = limit - 2 * len(fence) - len(CUT_MARK) - 2
    if len(text) <= room:
        return f"{fence}{text}{fence}", False
    return f"{fence}{text[:room]}{fence}\n{CUT_MARK}", True


def user(user_id: str | None) -> str:
    """Mention a user, or name the bot/monitoring."""
    if not user_id:
        return "the bot"
    if user_id == "monitoring":
        return "monitoring"
    return f"<@{user_id}>"


def group(group_id: str) -> str:
    """Mention a user group."""
    return f"<!subteam^{group_id}>"


def permalink(channel: str, ts: str) -> str:
    """The link to a message, in Slack's own format, without asking Slack."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def clock(at: datetime | None) -> str:
    """Time of day in UTC, as on the incident card."""
    return "—" if at is None else f"{at:%H:%M:%S} UTC"


def seconds(start: datetime | None, end: datetime | None) -> str:
    """A step's duration."""
    if start is None or end is None:
        return ""
    return f"{(end - start).total_seconds():.1f}s"
