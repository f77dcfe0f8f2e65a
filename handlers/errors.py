"""One place that turns an unexpected error into a log line and a sentence for the user."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from handlers.thread import correlation_id

log = logging.getLogger(__name__)


def register(app: App, client: WebClient) -> None:
    """Install the app-wide error handler."""

    @app.error
    def failed(error: Exception, body: dict[str, Any]) -> BoltResponse:
        ref = correlation_id()
        log.error("unhandled error [%s]: %s", ref, error, exc_info=error)
        user = (body.get("user") or {}).get("id") or body.get("user_id")
        channel = (body.get("channel") or {}).get("id") or body.get("channel_id")
        if user and channel:
            try:
                client.chat_postEphemeral(
                    channel=channel,
                    user=user,
                    text=f":warning: Something went wrong and nothing more was done. "
                    f"Reference {ref} (give it to whoever runs the bot).",
                )
            except SlackApiError:
                log.exception("could not tell the user about [%s]", ref)
        return BoltResponse(status=500, body=f"error {ref}")
