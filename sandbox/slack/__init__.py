"""A fake Slack Web API: answers like Slack, keeps what a workspace would show, records every call.

Design reasoning:

- slack_sdk's `WebClient` (and Bolt through it) takes a `base_url`, so the production client
  code runs unchanged against a local HTTP server; nothing is patched. The server binds
  127.0.0.1 on a free port, so tests and the demo can run several side by side.
- It answers the way Slack does on the wire: HTTP 200 with `ok: false` and Slack's own error
  code for API errors, HTTP 429 with `Retry-After` for rate limits. The bot's error handling
  and slack_sdk's retry handlers therefore meet the behaviour they will meet in production.
- It keeps state, not only a log: a message edited three times shows its last text, a thread
  holds its replies, an uploaded file keeps its bytes, a view keeps its latest version. Tests
  assert on what a person would see; the call log gives the order and the exact arguments.
- It is strict where a bot bug would also fail against real Slack (unknown channel, posting
  where the bot is not a member, more than 50 blocks, an oversize modal title, a trigger_id
  used twice, a stale view hash, a reply to a thread that does not exist) and lenient where
  strictness buys nothing here (scopes, pagination cursors, human channel membership).
- Requests are parsed once (JSON or form body, query string, JSON-encoded fields such as
  `blocks` and `view`), so every method sees plain values and `Call.args` shows what was sent.
- Layers, one module each: `models` (frozen snapshots tests read), `wire` (argument parsing
  and Slack's validation rules), `state` (the workspace: seeding, readers, Slack's JSON
  shapes), `methods` (one `_api_<method>` per Web API method, found by name), `server`
  (`FakeSlack`: HTTP, auth, failure injection, the call log). One re-entrant lock guards all
  state; readers return frozen snapshots, so a test thread can read while the bot writes.
"""

from sandbox.slack.models import (
    DEFAULT_TOKEN,
    Call,
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
from sandbox.slack.server import FakeSlack, Hook
from sandbox.slack.state import SlackState

__all__ = [
    "DEFAULT_TOKEN",
    "Call",
    "Channel",
    "Ephemeral",
    "FakeSlack",
    "Hook",
    "Invite",
    "Message",
    "SlackState",
    "UploadedFile",
    "User",
    "UserGroup",
    "View",
    "Workspace",
]
