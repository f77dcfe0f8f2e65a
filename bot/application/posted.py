"""What the Slack side tells the bot it posted: the incident's card, the run's thread, each
message of the thread by slot. Recorded here, through the application layer, so that the
Slack side writes no row itself."""

from __future__ import annotations

from dataclasses import dataclass

from bot.persistence.store import Store


@dataclass
class Posted:
    """Records of the bot's own Slack messages (the `Thread` implementation's writes)."""

    store: Store

    def card(self, incident_id: str, *, channel: str, ts: str) -> None:
        """The incident's card was posted in `channel` at `ts`."""
        self.store.incidents.set_card(incident_id, channel=channel, card_ts=ts)

    def thread(self, run_id: str, *, channel: str, thread_ts: str, plan_ts: str) -> None:
        """The run's thread opened under the card, with its plan message."""
        self.store.runs.set_thread(run_id, channel=channel, thread_ts=thread_ts, plan_ts=plan_ts)

    def message(self, run_id: str, slot: str, *, channel: str, ts: str) -> None:
        """A message (or file) of the run's thread was posted for `slot` (first one wins);
        a slot named `…_ts` is also kept with the run's thread, for later edits."""
        self.store.posts.record(run_id, slot, channel=channel, ts=ts)
        if slot.endswith("_ts"):
            self.store.runs.note_message(run_id, slot, ts)
