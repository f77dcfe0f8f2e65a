"""The front process's work pool: it forwards the request instead of doing its work.

See bot/front.py for the two processes `serve --http` runs. `Forward` is a
`Later` whose tasks are forwards: a listener's `submit(work)` sends the Slack
request being answered (once, however often its listener submits) to the work
process over its channel (bot/channel.py), signed again, where the same
listener does the work. The pool's bounds, its busy answer and its metrics
are `Later`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.channel import Channel
from bot.front import FrontRequest, current_request, signed_headers
from handlers.pool import Later


class Forward(Later):
    """The front's work pool: each request whose listener has work goes to the work process."""

    def __init__(self, channel: str, signing_secret: str, *, threads: int, queue: int) -> None:
        """`channel`: the path of the work process's socket (bot/channel.py)."""
        super().__init__(threads=threads, queue=queue)
        self._secret = signing_secret
        self._send = Channel(channel)

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        on_error: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Forward the request being answered (once), instead of running `fn` here."""
        request = current_request()
        if request is None:
            raise RuntimeError("work submitted outside a Slack request cannot be forwarded")
        if request.forwarded:
            return True
        taken = super().submit(self._forward, request, on_error=on_error)
        request.forwarded = taken
        return taken

    def _forward(self, request: FrontRequest) -> None:
        headers = signed_headers(self._secret, request.body, request.content_type)
        status, answer = self._send(headers, request.body)
        if status != 200:
            raise RuntimeError(f"the work process answered {status}: {answer!r}")
