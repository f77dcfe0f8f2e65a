"""Slack's text limits and formatting, in one place.

Slack refuses a message whose section text passes 3000 characters, a header
past 150, a button or option label past 75, more than 50 blocks in a message
or 100 in a modal. Everything we build goes through these helpers so nothing
we post is refused for its size; longer content is cut here and attached as
a file by the caller.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import ConfirmObject, ContextBlock, MarkdownTextObject, SectionBlock

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
LABEL_LIMIT = 75
MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100
CONFIRM_LIMIT = 300
"""A confirm dialog's text (mrkdwn)."""
CUT_MARK = "… (cut; full text attached)"


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_GROUP_ID = re.compile(r"^S[A-Z0-9]{2,20}$")


def esc(text: object) -> str:
    """Escape text from people, alerts or target systems for Slack mrkdwn.

    Slack reads `<...>` as a mention, a channel ping (`<!channel>`) or a link,
    and `&` starts an entity; only these three characters need escaping
    (https://api.slack.com/reference/surfaces/formatting#escaping). Every piece
    of text the bot did not write itself goes through here before it is put in
    a message, so a summary or an alert annotation can never ping a channel or
    hide a link. Mentions the bot means to make are built from ids (`user`,
    `group`), never from text.
    """
    return "".join(_ESCAPES.get(c, c) for c in str(text))


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&](?:[a-z_-]*(?:token|secret|password|passwd|key|signature|sig|auth)"
    r"[a-z_-]*))=[^&#\s]+",
    re.IGNORECASE,
)


def mask_urls(text: str) -> str:
    """Hide credentials in the URLs of a step's detail: user:password@ and token-like params.

    Known secret values are already masked by the Web API client (`bot.app`); this
    catches what looks like one in a URL (`?access_token=…`, `https://user:pw@host`).
    """
    return _SECRET_PARAM.sub(r"\g<name>=…", _USERINFO.sub(r"\g<scheme>…@", text))


def cut(text: str, limit: int, *, mark: str = "…") -> str:
    """Return `text` no longer than `limit`, marked where it was cut (never mid-entity)."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - len(mark)]) + mark


def code(text: str, limit: int = SECTION_LIMIT) -> tuple[str, bool]:
    """Wrap `text` in a code block within `limit`; say whether it was cut."""
    fence = "```"
    room = limit - 2 * len(fence) - len(CUT_MARK) - 2
    if len(text) <= room:
        return f"{fence}{text}{fence}", False
    return f"{fence}{text[:room]}{fence}\n{CUT_MARK}", True


def user(user_id: str | None) -> str:
    """Mention a user by id, or name the bot/monitoring; anything not an id is shown escaped."""
    if not user_id:
        return "the bot"
    if user_id == "monitoring":
        return "monitoring"
    if not _USER_ID.match(user_id):
        return esc(user_id)
    return f"<@{user_id}>"


def group(group_id: str) -> str:
    """Mention a user group by id; anything not a group id is shown escaped."""
    if not _GROUP_ID.match(group_id):
        return esc(group_id)
    return f"<!subteam^{group_id}>"


def permalink(channel: str, ts: str) -> str:
    """The link to a message, in Slack's own format, without asking Slack."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def thread_link(slack: dict[str, Any]) -> str | None:
    """The permalink of a run's thread (its `run.slack`), if it has one."""
    if not slack.get("channel") or not slack.get("thread_ts"):
        return None
    return permalink(str(slack["channel"]), str(slack["thread_ts"]))


def when(at: datetime | None, *, seconds: bool = False) -> str:
    """A time each reader sees in their own zone and words (Slack's date token).

    `<!date^1392734382^{date_short_pretty} {time}|2014-02-18 14:39 UTC>`: Slack renders
    "today 15:39", "yesterday 15:39" or "Feb 18 15:39" in the reader's zone and clock
    style; clients that cannot render tokens show the UTC fallback after `|`
    (https://api.slack.com/reference/surfaces/formatting#date-formatting). Every time the
    bot shows in a message goes through here; `seconds` keeps them (`{time_secs}`).
    """
    if at is None:
        return "—"
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    utc = aware.astimezone(UTC)
    clock, fallback = (
        ("time_secs", f"{utc:%Y-%m-%d %H:%M:%S}") if seconds else ("time", f"{utc:%Y-%m-%d %H:%M}")
    )
    return f"<!date^{int(aware.timestamp())}^{{date_short_pretty}} {{{clock}}}|{fallback} UTC>"


_MOMENT = re.compile(
    r"\b(?P<day>\d{4}-\d{2}-\d{2})[T ](?P<clock>\d{2}:\d{2})(?P<secs>:\d{2}(?:\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2}| UTC\b)"
)


def dated(text: str, *, tokens: bool = True) -> str:
    """Show each time in already escaped mrkdwn `text` as a date token (`when`).

    Target systems and the runner write times as ISO 8601 with their zone
    (`2026-12-07T10:04:21+00:00`) or as `2026-12-07 10:04 UTC`; a reader wants them in
    their own zone. Times without a zone are left alone (whose clock?), and so is text in
    backticks, where Slack shows a token as typed. `tokens=False`: the token's UTC
    fallback instead, for text where Slack renders no tokens (a confirm dialog).
    """

    def token(match: re.Match[str]) -> str:
        zone = match["zone"].strip()
        zone = "+00:00" if zone in ("Z", "UTC") else zone
        secs = match["secs"] or ""
        try:
            at = datetime.fromisoformat(f"{match['day']}T{match['clock']}{secs}{zone}")
        except ValueError:
            return match[0]
        said = when(at, seconds=bool(secs))
        return said if tokens else said.rsplit("|", 1)[1].rstrip(">")

    parts = text.split("`")
    parts[::2] = [_MOMENT.sub(token, part) for part in parts[::2]]
    return "`".join(parts)


def seconds(start: datetime | None, end: datetime | None) -> str:
    """A step's duration."""
    if start is None or end is None:
        return ""
    return f"{(end - start).total_seconds():.1f}s"


def md(text: str) -> MarkdownTextObject:
    """Markdown text cut to what a section holds: the one piece every builder starts from."""
    return MarkdownTextObject(text=cut(text, SECTION_LIMIT))


def sentence(text: str) -> str:
    """`text` as a sentence: capitalised, with a full stop."""
    return f"{text[:1].upper()}{text[1:]}."


def section(text: str) -> SectionBlock:
    """A section of markdown text (already escaped where it quotes people or systems)."""
    return SectionBlock(text=md(text))


def confirm(title: str, text: str, *, yes: str) -> ConfirmObject:
    """A confirm dialog, its `text` (escaped by the caller) cut to Slack's limit."""
    return ConfirmObject(title=title, text=cut(text, CONFIRM_LIMIT), confirm=yes, deny="Not yet")


def context(*lines: str) -> ContextBlock:
    """A context block of up to ten markdown lines (Slack's limit)."""
    return ContextBlock(elements=[md(line) for line in lines[:10]])


def sections(lines: list[str]) -> list[SectionBlock]:
    """Put lines in as few sections as Slack's text limit allows, none cut mid-line."""
    sections: list[SectionBlock] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = cut(line, SECTION_LIMIT - 10)
        if chunk and size + len(line) + 1 > SECTION_LIMIT - 10:
            sections.append(section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        sections.append(section("\n".join(chunk)))
    return sections
