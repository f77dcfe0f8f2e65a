"""One place that turns an error into a log line and a sentence for the person.

`register` installs the app-wide error handler for what nothing else caught
(a bug, the bot's database away): a log line with a correlation id and a
traceback, and a sentence with the same id to the person, read from the
payload; the request is answered 200 in the form Slack expects (`answer`),
never 500, which Slack shows as a bare error and retries.
Only signed requests get this far (`handlers.verify` guards the HTTP entry
point; Slack authenticates Socket Mode), so the person named is the one who
acted. It also installs `verify.EnvelopeGuard`, so a malformed envelope is
answered 400 in Socket Mode as it is over HTTP.

`tell` is how listeners answer a refusal or a payload they cannot read: an
ephemeral message where the person clicked, or a direct message when the
payload names no channel, or when Slack cannot show an ephemeral there (a slash
command typed in a channel the bot is not in: `chat.postEphemeral` answers
`channel_not_found` or `not_in_channel`, https://api.slack.com/methods/chat.postEphemeral).
"""

from __future__ import annotations

import http.client
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from slack_bolt import App
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.application.flows import Flows
from handlers import text as t
from handlers.modal_blocks import message_view
from handlers.notices import notices_for, transient
from handlers.payloads import BadPayload, Where, where_of
from handlers.verify import EnvelopeGuard

log = logging.getLogger(__name__)
Read = TypeVar("Read")


def correlation_id() -> str:
    """A short id that ties what the user is told to the log line."""
    return uuid.uuid4().hex[:10]


NOT_THERE = frozenset({"channel_not_found", "not_in_channel", "is_archived", "user_not_in_channel"})
"""chat.postEphemeral's errors for a channel the person can be reached in only by DM."""


def tell(client: WebClient, where: Where | None, text: str) -> None:
    """Say `text` to the person only: ephemeral in the channel, else by direct message.

    When Slack is down the notice is kept and delivered once it is back
    (`handlers.notices`); a refusal that will never change (the user is gone) is logged.
    """
    if where is None:
        log.warning("nobody to tell: %s", text)
        return
    try:
        send(client, where, text)
    except (SlackApiError, OSError, http.client.HTTPException) as exc:
        reason = exc.response.get("error") if isinstance(exc, SlackApiError) else repr(exc)
        if transient(exc):
            notices_for(client, send).keep(where, text, reason=str(reason))
        else:
            log.warning("could not tell %s (%s): %s", where.user, reason, text)


def read_or_tell(
    client: WebClient, body: dict[str, Any], read: Callable[[dict[str, Any]], Read]
) -> Read | None:
    """Read the payload with `read`, or tell the person why it cannot be read (None)."""
    try:
        return read(body)
    except BadPayload as exc:
        tell(client, where_of(body), f":warning: {t.esc(exc)}")
        return None


def send(client: WebClient, where: Where, text: str) -> None:
    """One try at telling the person; raise what Slack (or the network) said."""
    if where.channel:
        try:
            client.chat_postEphemeral(
                channel=where.channel, user=where.user, thread_ts=where.thread_ts, text=text
            )
            return
        except SlackApiError as exc:
            if exc.response.get("error") not in NOT_THERE:
                raise
            log.info("cannot tell %s in %s; telling by DM", where.user, where.channel)
    client.chat_postMessage(channel=where.user, text=text)


def register(app: App, client: WebClient, *, flows: Flows | None = None) -> None:
    """Install the malformed-envelope guard and the app-wide error handler; notices about a
    run that Slack does not take at once go into `flows`' outbox (`handlers.notices`)."""
    app.use(EnvelopeGuard())
    notices_for(client, send).flows = flows

    @app.error
    def failed(error: Exception, body: dict[str, Any]) -> BoltResponse:
        ref = correlation_id()
        log.error("unhandled error [%s]: %s", ref, error, exc_info=error)
        return answer(client, body, failure_text(error, ref))


def failure_text(error: BaseException | None, ref: str) -> str:
    """What the person reads about an error nothing else caught, with its reference."""
    if error is not None and _from_the_database(error):
        return (
            ":warning: The bot cannot reach its database right now, so nothing was done; "
            f"try again in a minute. Reference {ref}."
        )
    return (
        ":warning: Something went wrong and nothing more was done. "
        f"Reference {ref} (give it to whoever runs the bot)."
    )


def answer(client: WebClient, body: dict[str, Any], said: str) -> BoltResponse:
    """Answer a request that failed with HTTP 200, never 500, in the form Slack expects.

    Slack shows nothing of a failed request but a generic error (and retries events), so the
    answer itself says it where Slack shows an answer: a slash command's ephemeral reply, a
    form's submission replaced by a view saying it. Elsewhere (buttons, options, shortcuts) the
    ack is empty (or no options) and the person is told in the channel or by DM, through
    `tell`, which keeps the notice while Slack is down; an event names nobody who asked, so
    it is acked and logged.
    """
    kind = body.get("type")
    if body.get("command"):
        return _json({"response_type": "ephemeral", "text": said})
    if kind == "view_submission":
        view = message_view(None, "Not done", said).to_dict()
        return _json({"response_action": "update", "view": view})
    try:
        tell(client, where_of(body), said)
    except Exception as exc:  # the answer must still be 200: the notice is what is lost
        log.error("could not tell anyone about a failed request: %s", exc, exc_info=exc)
    if kind == "block_suggestion":
        return _json({"options": []})
    return BoltResponse(status=200, body="")


def _json(content: dict[str, Any]) -> BoltResponse:
    return BoltResponse(
        status=200, body=json.dumps(content), headers={"content-type": "application/json"}
    )


def _from_the_database(error: BaseException) -> bool:
    """Whether `error` is the bot's database failing (SQLAlchemy's and its drivers' errors),
    told by the exception's own package: handlers do not import the persistence libraries."""
    for cause in (error, error.__cause__, error.__context__):
        if cause is None:
            continue
        for cls in type(cause).__mro__:
            if cls.__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3"):
                return True
    return False
