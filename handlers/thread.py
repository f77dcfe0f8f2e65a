"""The incident thread in Slack: the card, the plan, progress, outputs, checklist, template.

Two ways in. Interactive handlers (an approval click, a checklist tick) call
`IncidentThread` directly: an error that survives the WebClient's retry
handlers is logged with a correlation id and said in the thread. Everything
the runner reports comes through the outbox (`handlers.outbox.SlackOutbox`), which
calls `IncidentThread(strict=True)`: it raises `RetryLater` / `Undeliverable`
(`handlers.delivery`) instead of swallowing, so the sender retries.

Every message the bot posts in a thread has a slot (`progress`, `checklist`,
`step:3:1`, `rca`) whose ts is kept in `slack_messages`, so any bot process can
edit it later, and a delivery repeated after a crash edits instead of posting
twice. The progress and checklist ts are mirrored into `run.slack` for the
handlers that find a run by a clicked message.
"""

from __future__ import annotations

import http.client
import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.application.chart import chart_filename, timeline_chart
from bot.application.drills import measure
from bot.application.requests import ThreadNotOpened
from bot.application.timeline import rca_template
from bot.application.verification import checklist
from bot.config import Environment
from bot.domain.aftermath import RETRIED, Aftermath
from bot.domain.records import EventRecord, IncidentRecord, PostRecord, RunRecord, StepView
from bot.execution.drill_plans import is_drill
from bot.execution.runner import stored_steps
from handlers import announce_blocks, blocks, drill_blocks, review_blocks
from handlers import text as t
from handlers.delivery import delivery_error
from handlers.deps import Deps
from handlers.errors import correlation_id
from handlers.names import Names
from handlers.text import permalink

log = logging.getLogger(__name__)


class IncidentThread:
    """Posts and edits the messages of incident threads."""

    def __init__(self, deps: Deps, *, strict: bool = False) -> None:
        self.deps = deps
        self.client: WebClient = deps.client
        self.strict = strict
        """Raise RetryLater / Undeliverable instead of logging (for the outbox's sender)."""
        self.names = Names(self.client)
        """Real names for the RCA file (`users.info`, cached)."""
        self.posted = deps.posted
        """Where what this thread posts is recorded (through the application layer)."""

    # opening ------------------------------------------------------------------

    def open(self, incident: IncidentRecord, run: RunRecord) -> RunRecord:
        """Post the card (in a dedicated channel if configured) and the plan under it.

        Raise ThreadNotOpened, saying what a person should do, when Slack refuses
        either post after the client's retries; `bot.application.flows` then withdraws the run.
        """
        env = self.deps.config.environment(run.environment)
        try:
            channel = self._channel_for(incident, run, env)
            card = self.client.chat_postMessage(
                channel=channel,
                text=blocks.card_text(incident, run),
                blocks=blocks.incident_card(incident, run, self._facts(run)),
            )
        except (SlackApiError, OSError) as exc:
            raise self._not_opened(exc, env.incident_channel) from exc
        card_ts = card["ts"]
        channel = card["channel"]
        self.posted.card(incident.id, channel=channel, ts=card_ts)
        try:
            plan = self.client.chat_postMessage(
                channel=channel,
                thread_ts=card_ts,
                text=blocks.plan_text(run, "approval needed"),
                blocks=blocks.plan_message(run, self._facts(run), approvers=env.approvers),
            )
        except (SlackApiError, OSError) as exc:
            refused = self._not_opened(exc, channel)
            self._strike_card(channel, card_ts, incident, refused.reason)
            raise refused from exc
        self.posted.thread(run.id, channel=channel, thread_ts=card_ts, plan_ts=plan["ts"])
        if run.break_glass:
            self.review(run.id)  # approvers mentioned at once, the review assigned
        self.deps.home.changed.set()
        fresh = self.deps.reads.run(run.id)
        assert fresh is not None
        return fresh

    def _not_opened(self, exc: Exception, channel: str) -> ThreadNotOpened:
        """Say why Slack refused the thread and what a person can do about it."""
        if not isinstance(exc, SlackApiError):
            reason = f"the connection to Slack failed ({type(exc).__name__}: {t.esc(exc)})"
            return ThreadNotOpened(reason, "Nothing will run. Request the rollback again shortly.")
        error = str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
        reason = f"Slack refused to post in <#{channel}> ({error})"
        if error == "not_in_channel":
            bot = self._bot_mention()
            advice = (
                f"Invite {bot} to <#{channel}> (type `/invite {bot}` there), "
                "then request the rollback again."
            )
        elif error in ("channel_not_found", "is_archived", "restricted_action"):
            advice = (
                f"The incident channel <#{channel}> cannot be used; ask whoever runs the bot "
                "to fix `incident_channel` in its config, then request the rollback again."
            )
        else:
            advice = "Nothing will run. Request the rollback again in a minute."
        return ThreadNotOpened(reason, advice)

    def _bot_mention(self) -> str:
        try:
            return f"<@{self.client.auth_test()['user_id']}>"
        except (SlackApiError, OSError):
            return "@rollback"

    def _strike_card(self, channel: str, ts: str, incident: IncidentRecord, reason: str) -> None:
        """Say on a card whose plan could not be posted that nothing will run."""
        text = f":heavy_minus_sign: {incident.id}: not opened, nothing will run: {reason}"
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=[])
        except (SlackApiError, OSError):
            log.exception("%s: could not mark the card as not opened", incident.id)

    def _channel_for(self, incident: IncidentRecord, run: RunRecord, env: Environment) -> str:
        if not env.dedicated_channel:
            return env.incident_channel
        name = f"inc-{incident.id.removeprefix('INC-').lower()}-{run.target}"[:80]
        created = self.client.conversations_create(name=name)
        channel_id = created["channel"]["id"]
        people = sorted({run.requester, *env.approvers.users} - {"monitoring"})
        if people:
            self.client.conversations_invite(channel=channel_id, users=",".join(people))
        self.client.chat_postMessage(
            channel=env.incident_channel,
            text=f":rotating_light: {incident.id}: rollback of {t.esc(run.target)} in "
            f"{t.esc(run.environment)} is handled in <#{channel_id}>",
        )
        return str(channel_id)

    # refreshing ---------------------------------------------------------------

    def refresh(self, run_id: str) -> None:
        """Re-render the card and the plan message from the current state."""
        self.deps.home.changed.set()  # the home tab shows run states too
        run = self.deps.reads.run(run_id)
        if run is None or not run.slack:
            return
        incident = self.deps.reads.incident(run.incident_id)
        assert incident is not None
        env = self.deps.config.environment(run.environment)
        facts = self._facts(run)
        self._call(
            run,
            "chat_update",
            channel=run.slack["channel"],
            ts=run.slack["thread_ts"],
            text=blocks.card_text(incident, run),
            blocks=blocks.incident_card(incident, run, facts),
        )
        self._call(
            run,
            "chat_update",
            channel=run.slack["channel"],
            ts=run.slack["plan_ts"],
            text=blocks.plan_text(run, run.state),
            blocks=blocks.plan_message(run, facts, approvers=env.approvers),
        )

    def _facts(self, run: RunRecord) -> blocks.RunFacts:
        events = self.deps.reads.events(run.incident_id)
        mine = [e for e in events if e.run_id == run.id]
        rejected = next((e.actor for e in mine if e.kind == "run.rejected"), None)
        cancelled = next((e.actor for e in mine if e.kind == "run.cancelled"), None)
        auto = next((e.at for e in mine if e.kind == "run.auto_approved"), None)
        return blocks.RunFacts(
            approvals=self.deps.reads.approvals(run),
            rejected_by=rejected,
            cancelled_by=cancelled,
            auto_approved_at=auto,
            approvers=self.deps.config.environment(run.environment).approvers,
            after=self._after(run, events),
        )

    def _after(self, run: RunRecord, events: list[EventRecord] | None = None) -> Aftermath | None:
        return self.deps.reads.aftermath(run, events)

    def review(self, run_id: str) -> None:
        """Post, or re-render, the break-glass review message (slot `review`)."""
        self.deps.home.changed.set()
        run = self.deps.reads.run(run_id)
        review = self.deps.reads.review(run_id)
        if run is None or review is None or not run.slack:
            return
        env = self.deps.config.environment(run.environment)
        self._keep_message(
            run,
            key="review",
            text=review_blocks.review_text(run),
            message=review_blocks.review_message(run, review, approvers=env.approvers),
        )

    def say(self, run: RunRecord, text: str, *, slot: str | None = None) -> None:
        """Post a plain reply in the run's thread (once per `slot`, when given)."""
        if not run.slack:
            return
        if slot is None:
            self._reply(run, "chat_postMessage", text=text)
        else:
            self._keep_message(run, key=slot, text=text, message=[])

    # progress -----------------------------------------------------------------

    def progress(self, run: RunRecord, *, live: dict[str, Any] | None = None) -> None:
        """Post the progress message once, then edit it in place (`live`: a running step's
        latest reading)."""
        fresh = self.deps.reads.run(run.id)
        if fresh is None or not fresh.slack:
            return
        records = self.deps.reads.steps(run.id)
        self._keep_message(
            fresh,
            key="progress_ts",
            text=f"Rollback progress: {fresh.state}",
            message=blocks.progress_message(fresh, records, live=live, after=self._after(fresh)),
        )

    def _keep_message(self, run: RunRecord, *, key: str, text: str, message: list[Any]) -> None:
        """Edit the thread message of slot `key`, or post it and record its ts at once."""
        content: dict[str, Any] = {"channel": run.slack["channel"], "text": text}
        if message:
            content["blocks"] = message
        slot = self.deps.reads.post(run.id, key)
        ts = slot.ts if slot is not None else run.slack.get(key)
        if ts:
            self._call(run, "chat_update", ts=ts, **content)
            return
        posted = self._call(run, "chat_postMessage", thread_ts=run.slack["thread_ts"], **content)
        if posted is None:
            return
        self.posted.message(run.id, key, channel=posted["channel"], ts=posted["ts"])

    def _upload_once(self, run: RunRecord, *, key: str, **kwargs: Any) -> None:
        """Upload a file into the thread unless slot `key` already has one."""
        if self.deps.reads.post(run.id, key) is not None:
            return
        uploaded = self._reply(run, "files_upload_v2", **kwargs)
        if uploaded is None:
            return
        files = uploaded.get("files") or [uploaded.get("file") or {}]
        file_id = str((files[0] or {}).get("id") or "uploaded")
        self.posted.message(run.id, key, channel=run.slack["channel"], ts=file_id)

    def step_output(
        self, run: RunRecord, step: dict[str, Any], record: StepView, *, slot: str | None = None
    ) -> None:
        """Post a finished step's output; attach the whole of it when it was cut."""
        if not run.slack or not (record.output or record.summary):
            return
        key = slot or f"step:{step['position']}:{record.attempts}"
        message, was_cut = blocks.step_output(step, record)
        self._keep_message(
            run,
            key=key,
            text=f"Step {step['position'] + 1} ({blocks.label(step)}): {record.state}",
            message=message,
        )
        if was_cut:
            self._upload_output(run, step, record, key=f"file:{key}")

    def attach_long_output(
        self, run: RunRecord, step: dict[str, Any], record: StepView, *, slot: str
    ) -> None:
        """A step that did not fail: its summary is on the progress message; output too long
        for it goes into the thread as a file, nothing else (less noise)."""
        if not run.slack or not record.output:
            return
        _, was_cut = blocks.step_output(step, record)
        if was_cut:
            self._upload_output(run, step, record, key=f"file:{slot}")

    def _upload_output(
        self, run: RunRecord, step: dict[str, Any], record: StepView, *, key: str
    ) -> None:
        """Attach a step's whole output to the thread (once per slot `key`)."""
        self._upload_once(
            run,
            key=key,
            filename=f"{run.incident_id}-step{step['position'] + 1}-{step['name']}.txt",
            title=f"Full output of step {step['position'] + 1} ({blocks.label(step)})",
            content=record.output,
        )

    def finished(self, run: RunRecord) -> None:
        """Update card and plan, announce the end, then post the checklist and the RCA template.

        A retried run's earlier failure announcement is redrawn to say how the retry ended,
        and its RCA template is posted again: the first one says the run failed.
        """
        self.refresh(run.id)
        self.progress(run)
        self._retry_ended(run)
        self.announce(run)
        self._drill_measured(run)
        self.post_checklist(run)
        fresh = self.deps.reads.run(run.id) or run
        if is_drill(fresh):
            return  # a drill is no incident: its report is the measure above, not an RCA
        if fresh.retries:
            self._post_rca(fresh, key=f"rca:{fresh.retries}", as_of=f"retry {fresh.retries}")
        else:
            self._post_rca(fresh, key="rca", as_of="")

    def _post_rca(self, run: RunRecord, *, key: str, as_of: str) -> None:
        """Upload the RCA template and its chart once per `key`; `as_of` says which moment a
        later one is of (a file cannot be edited, so a newer state is a newer file)."""
        incident = self.deps.reads.incident(run.incident_id)
        assert incident is not None
        events = self.deps.reads.events(run.incident_id)
        runs = self.deps.reads.runs(incident_id=incident.id)
        afters = {r.id: a for r in runs if (a := self.deps.reads.aftermath(r, events))}
        template = rca_template(
            incident, runs, events, zone=self.deps.config.zone, names=self.names, afters=afters
        )
        chart = timeline_chart(incident, runs, events)
        self._upload_once(
            run,
            key=key,
            file_uploads=[
                {
                    "filename": f"{run.incident_id}-rca.md",
                    "title": f"{run.incident_id} post-incident review (RCA template)",
                    "content": template,
                },
                {
                    "filename": chart_filename(run.incident_id),
                    "title": f"{run.incident_id} timeline: phases and step durations",
                    "file": chart.png,
                },
            ],
            initial_comment="Root-cause-analysis template, timeline filled from the audit log"
            + (f", as of {as_of} (it replaces the earlier one)" if as_of else "")
            + ". Download, complete and share it.",
        )

    def _retry_ended(self, run: RunRecord) -> None:
        """Redraw the failure announcement a retry answered, now that the retry has ended."""
        fresh = self.deps.reads.run(run.id)
        if fresh is None or not fresh.slack or not fresh.retries:
            return
        earlier = "announce" if fresh.retries == 1 else f"announce:{fresh.retries - 1}"
        slot = self.deps.reads.post(fresh.id, earlier)
        if slot is None:
            return
        events = self.deps.reads.events(fresh.incident_id)
        retried = next((e.actor for e in reversed(events) if e.kind == RETRIED), None)
        self._redraw_announcement(
            fresh, slot, announce_blocks.retried_message(fresh, retried_by=retried)
        )

    def _redraw_announcement(self, run: RunRecord, slot: PostRecord, message: list[Any]) -> None:
        """Edit the run's end announcement in `slot` to say `message`."""
        self._call(
            run,
            "chat_update",
            channel=slot.channel,
            ts=slot.ts,
            text=announce_blocks.failure_text(run),
            blocks=message,
        )

    def _drill_measured(self, run: RunRecord) -> None:
        """Say in a drill's thread what it measured (once), from its step records."""
        fresh = self.deps.reads.run(run.id)
        if fresh is None or not is_drill(fresh):
            return
        measured = measure(stored_steps(fresh), self.deps.reads.steps(fresh.id))
        self.say(fresh, drill_blocks.measured_text(fresh.target, measured), slot="drill")

    def stale(self, run_id: str) -> None:
        """Say to everyone in the thread that the plan is out of date; offer Re-plan (once)."""
        self.refresh(run_id)
        run = self.deps.reads.run(run_id)
        if run is None or not run.slack:
            return
        env = self.deps.config.environment(run.environment)
        people = [run.requester, *env.approvers.users]
        self._keep_message(
            run,
            key="stale",
            text=t.esc(f"The rollback plan for {run.target} is out of date: re-plan"),
            message=blocks.stale_message(run, people=people),
        )

    def announce(self, run: RunRecord) -> None:
        """A failure loudly (broadcast, people mentioned, a next step); a success in one line.

        Posted once per run (slot `announce`), so a repeated delivery does not say it twice.
        """
        fresh = self.deps.reads.run(run.id)
        if fresh is None or not fresh.slack or fresh.state not in ("failed", "succeeded"):
            return
        slot = _announce_slot(fresh)
        if self.deps.reads.post(fresh.id, slot) is not None:
            return
        channel, thread_ts = fresh.slack["channel"], fresh.slack["thread_ts"]
        if fresh.state == "failed":
            posted = self._call(
                fresh,
                "chat_postMessage",
                channel=channel,
                thread_ts=thread_ts,
                reply_broadcast=True,
                text=announce_blocks.failure_text(fresh),
                blocks=self._failure(fresh),
            )
        else:
            posted = self._call(
                fresh,
                "chat_postMessage",
                channel=channel,
                text=announce_blocks.success_line(fresh, link=permalink(channel, thread_ts)),
            )
        if posted is not None:
            self.posted.message(fresh.id, slot, channel=channel, ts=posted["ts"])

    def _failure(self, run: RunRecord) -> list[Any]:
        env = self.deps.config.environment(run.environment)
        approved = [u for u, _ in self.deps.reads.approvals(run)]
        people = [run.requester, *(approved or env.approvers.users)]
        events = self.deps.reads.events(run.incident_id)
        retried = next((e.actor for e in reversed(events) if e.kind == RETRIED), None)
        return announce_blocks.failure_message(
            run, people=people, after=self._after(run, events), retried_by=retried
        )

    def decided(self, run_id: str) -> None:
        """Redraw every message that states the run's state after a person acted on its
        failure (retry, maintenance on or off, resolved): the failure announcement they
        clicked, then the card, the plan and the progress message. Marked resolved, the
        incident's RCA template is posted again: its outcome and recovery figures changed."""
        run = self.deps.reads.run(run_id)
        if run is None or not run.slack:
            return
        slot = self.deps.reads.post(run.id, _announce_slot(run, announced=True))
        if slot is not None:
            self._redraw_announcement(run, slot, self._failure(run))
        self.refresh(run.id)
        if self.deps.reads.post(run.id, "progress_ts") is not None:
            self.progress(run)
        after = self.deps.reads.aftermath(run)
        if after is not None and after.resolved_by and not is_drill(run):
            self._post_rca(run, key="rca:resolved", as_of="its resolution")

    def post_checklist(self, run: RunRecord) -> None:
        """Post, or re-render, the post-rollback verification checklist."""
        fresh = self.deps.reads.run(run.id)
        if fresh is None or not fresh.slack:
            return
        env = self.deps.config.environment(fresh.environment)
        items = checklist(
            env,
            self.deps.reads.steps(fresh.id),
            self.deps.reads.events(fresh.incident_id),
            reader=self.deps.metrics_reader,
        )
        self._keep_message(
            fresh,
            key="checklist_ts",
            text="Post-rollback verification checklist",
            message=blocks.checklist_message(fresh, items),
        )

    # errors -------------------------------------------------------------------

    def _reply(self, run: RunRecord, method: str, **kwargs: Any) -> Any:
        """Call `method` in the run's thread."""
        return self._call(
            run, method, channel=run.slack["channel"], thread_ts=run.slack["thread_ts"], **kwargs
        )

    def _call(self, run: RunRecord, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except (SlackApiError, OSError, http.client.HTTPException) as exc:
            if self.strict:
                raise delivery_error(method, exc) from exc
            if not isinstance(exc, SlackApiError):
                log.error("%s: Slack %s failed: %s: %s", run.incident_id, method, type(exc), exc)
                return None
            ref = correlation_id()
            log.error(
                "%s: Slack %s failed [%s]: %s",
                run.incident_id,
                method,
                ref,
                exc.response.get("error"),
            )
            if method != "chat_postMessage" or "blocks" in kwargs:
                self._tell(
                    run,
                    f":warning: Could not update Slack ({method}: "
                    f"{exc.response.get('error')}); reference {ref}.",
                )
            return None

    def _tell(self, run: RunRecord, text: str) -> None:
        try:
            self.client.chat_postMessage(
                channel=run.slack["channel"], thread_ts=run.slack["thread_ts"], text=text
            )
        except (SlackApiError, OSError, http.client.HTTPException):
            log.exception("%s: could not tell the thread either", run.incident_id)


def _announce_slot(run: RunRecord, *, announced: bool = False) -> str:
    """The slot of the run's end announcement: one per attempt (a retry may fail again).

    `announced`: the latest announcement made, which a retried run has not yet replaced."""
    retries = run.retries
    if announced and run.state != "failed":
        retries -= 1
    return "announce" if retries <= 0 else f"announce:{retries}"
