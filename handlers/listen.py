"""The preamble every listener of a run's messages shares, written once.

Ack; read the payload into its typed request (`handlers.payloads`), or tell the person why
it cannot be read; find the run it is about, or tell them it is gone; run the listener's
own body; and turn a refusal (`Refused`, or a target the config no longer has) into one
ephemeral sentence to the person. Nothing changes on a refusal, and no listener words it
its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from slack_bolt import Ack
from slack_sdk import WebClient

from bot.config import UnknownTarget
from bot.domain.records import RunRecord
from bot.execution.workflow import Refused
from handlers import text as t
from handlers.deps import Deps
from handlers.errors import read_or_tell, tell
from handlers.payloads import Where


class About(Protocol):
    """A request read from a payload: who asked, where."""

    @property
    def where(self) -> Where: ...


Item = TypeVar("Item", bound=About)
Body = Callable[[Item, RunRecord, WebClient], None]
Listener = Callable[[Ack, dict[str, Any], WebClient], None]

GONE = "This rollback no longer exists."


def refusal(exc: Exception) -> str:
    """What a refused request tells the person: one sentence, the reason first."""
    return f":warning: {t.sentence(str(exc))}"


def on_run(
    deps: Deps,
    read: Callable[[dict[str, Any]], Item],
    run_of: Callable[[Item], str | None],
    *,
    gone: str = GONE,
) -> Callable[[Body[Item]], Listener]:
    """Decorate `handle(item, run, client)` into a Bolt listener with the shared preamble.

    `read` parses the payload (BadPayload: told, nothing done); `run_of` names the run the
    request is about (None, or a run that is gone: `gone` is told).
    """

    def decorate(handle: Body[Item]) -> Listener:
        def listener(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            item = read_or_tell(client, body, read)
            if item is None:
                return
            run_id = run_of(item)
            run = deps.reads.run(run_id) if run_id is not None else None
            if run is None:
                tell(client, item.where, f":warning: {gone}")
                return
            try:
                handle(item, run, client)
            except (Refused, UnknownTarget) as exc:  # unknown: the config changed since
                tell(client, item.where, refusal(exc))

        listener.__name__ = listener.__qualname__ = getattr(handle, "__name__", "listener")
        return listener

    return decorate
