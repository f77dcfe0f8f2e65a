"""One place that turns an error into a log line and a sentence for the person.

`register` installs the app-wide error handler for what nothing else caught
(a bug): a log line with a correlation id and a traceback, and an ephemeral
"something went wrong" with the same id to the person, read from the payload.
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

import logging
from typing import Any

from slack_bolt import App
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from handlers.payloads import Where, where_of
from handlers.thread import correlation_id
from handlers.verify import EnvelopeGuard

log = logging.getLogger(__name__)

NOT_THERE = frozenset({"channel_not_found", "not_in_channel", "is_archived", "user_not_in_channel"})
"""chat.postEphemeral's errors for a channel the person can be reached in only by DM."""


def tell(client: WebClient, where: Where | None, text: str) -> None:
    """Say `text` to the person only: ephemeral in the channel, else by direct message."""
    if where is None:
        log.warning("nobody to tell: %s", text)
        return
    try:
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
    except SlackApiError as exc:
        log.warning("could not tell %s (%s): %s", where.user, exc.response.get("error"), text)


def register(app: App, client: WebClient) -> None:
    """Install the malformed-envelope guard and the app-wide error handler."""
    app.use(EnvelopeGuard())

    @app.error
    def failed(error: Exception, body: dict[str, Any]) -> BoltResponse:
        ref = correlation_id()
        log.error("unhandled error [%s]: %s", ref, error, exc_info=error)
        tell(
            client,
            where_of(body),
            f":warning: Something went wrong and nothing more was done. "
            f"Reference {ref} (give it to whoever runs the bot).",
        )
        return BoltResponse(status=500, body=f"error {ref}")
