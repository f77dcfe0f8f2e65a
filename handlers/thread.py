"""The incident thread in Slack: the card, the plan, progress, outputs, checklist, template.

Every message the bot keeps editing has its ts stored with the run
(`run.slack`), so any bot process can edit it later, after a restart too.
Web API calls go through a WebClient with retry handlers for rate limits
(429 + Retry-After), server errors and dropped connections; an error that
survives them is logged with a correlation id and, where there is a thread,
said in it, without stopping the rollback itself.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import Environment
from bot.models import Incident, Run
from bot.monitoring import MonitorEvents
from bot.runner import Progress
from bot.store import StepView
from bot.timeline import rca_template
from bot.verification import checklist
from handlers import blocks
from handlers.deps import Deps

log = logging.getLogger(__name__)


def correlation_id() -> str:
    """A short id that ties what the user is told to the log line."""
    return uuid.uuid4().hex[:10]


class IncidentThread:
    """Posts and edits the messages of incident threads."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.client: WebClient = deps.client

    # opening ------------------------------------------------------------------

    def open(self, incident: Incident, run: Run) -> Run:
        """Post the card (in a dedicated channel if configured) and the plan under it."""
        env = self.deps.config.environment(run.environment)
        channel = self._channel_for(incident, run, env)
        card = self.client.chat_postMessage(
            channel=channel,
            text=blocks.card_text(incident, run),
            blocks=blocks.incident_card(incident, run, self._facts(run)),
        )
        card_ts = card["ts"]
        channel = card["channel"]
        self.deps.store.update_incident(incident.id, channel=channel, card_ts=card_ts)
        plan = self.client.chat_postMessage(
            channel=channel,
            thread_ts=card_ts,
            text=f"Rollback plan for {run.target} in {run.environment}: approval needed",
            blocks=blocks.plan_message(run, self._facts(run), approvers=env.approvers),
        )
        slack = {"channel": channel, "thread_ts": card_ts, "plan_ts": plan["ts"]}
        self.deps.store.set_run_fields(run.id, slack=slack)
        fresh = self.deps.store.run(run.id)
        assert fresh is not None
        return fresh

    def _channel_for(self, incident: Incident, run: Run, env: Environment) -> str:
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
            text=f":rotating_light: {incident.id}: rollback of {run.target} in "
            f"{run.environment} is handled in <#{channel_id}>",
        )
        return str(channel_id)

    # refreshing ---------------------------------------------------------------

    def refresh(self, run_id: str) -> None:
        """Re-render the card and the plan message from the current state."""
        run = self.deps.store.run(run_id)
        if run is None or not run.slack:
            return
        incident = self.deps.store.incident(run.incident_id)
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
            text=f"Rollback plan for {run.target} in {run.environment}: {run.state}",
            blocks=blocks.plan_message(run, facts, approvers=env.approvers),
        )

    def _facts(self, run: Run) -> blocks.RunFacts:
        events = self.deps.store.events(run.incident_id)
        mine = [e for e in events if e.run_id == run.id]
        rejected = next((e.actor for e in mine if e.kind == "run.rejected"), None)
        cancelled = next((e.actor for e in mine if e.kind == "run.cancelled"), None)
        auto = next((e.at for e in mine if e.kind == "run.auto_approved"), None)
        return blocks.RunFacts(
            approvals=self.deps.workflow.approvals(run),
            rejected_by=rejected,
            cancelled_by=cancelled,
            auto_approved_at=auto,
        )

    def say(self, run: Run, text: str) -> None:
        """Post a plain reply in the run's thread."""
        if run.slack:
            self._reply(run, "chat_postMessage", text=text)

    # progress -----------------------------------------------------------------

    def progress(self, run: Run) -> None:
        """Post the progress message once, then edit it in place."""
        fresh = self.deps.store.run(run.id)
        if fresh is None or not fresh.slack:
            return
        records = self.deps.store.steps(run.id)
        self._keep_message(
            fresh,
            key="progress_ts",
            text=f"Rollback progress: {fresh.state}",
            message=blocks.progress_message(fresh, records),
        )

    def _keep_message(self, run: Run, *, key: str, text: str, message: list[Any]) -> None:
        """Edit the thread message stored under `run.slack[key]`, or post it and store its ts."""
        content = {"channel": run.slack["channel"], "text": text, "blocks": message}
        ts = run.slack.get(key)
        if ts:
            self._call(run, "chat_update", ts=ts, **content)
            return
        posted = self._call(run, "chat_postMessage", thread_ts=run.slack["thread_ts"], **content)
        if posted is not None:
            fresh = self.deps.store.run(run.id) or run
            self.deps.store.set_run_fields(run.id, slack={**fresh.slack, key: posted["ts"]})

    def step_output(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        """Post a finished step's output; attach the whole of it when it was cut."""
        if not run.slack or not (record.output or record.summary):
            return
        message, was_cut = blocks.step_output(step, record)
        self._reply(
            run,
            "chat_postMessage",
            text=f"Step {step['position'] + 1} ({step['name']}): {record.state}",
            blocks=message,
        )
        if was_cut:
            self._reply(
                run,
                "files_upload_v2",
                filename=f"{run.incident_id}-step{step['position'] + 1}-{step['name']}.txt",
                title=f"Full output of step {step['position'] + 1} ({step['name']})",
                content=record.output,
            )

    def finished(self, run: Run) -> None:
        """Update card and plan, then post the checklist and the RCA template."""
        self.refresh(run.id)
        self.progress(run)
        self.post_checklist(run)
        incident = self.deps.store.incident(run.incident_id)
        assert incident is not None
        events = self.deps.store.events(run.incident_id)
        template = rca_template(incident, self.deps.store.runs(incident_id=incident.id), events)
        self._reply(
            run,
            "files_upload_v2",
            filename=f"{run.incident_id}-rca.md",
            title=f"{run.incident_id} post-incident review (RCA template)",
            content=template,
            initial_comment="Root-cause-analysis template, timeline filled from the audit log. "
            "Download, complete and share it.",
        )

    def post_checklist(self, run: Run) -> None:
        """Post, or re-render, the post-rollback verification checklist."""
        fresh = self.deps.store.run(run.id)
        if fresh is None or not fresh.slack:
            return
        env = self.deps.config.environment(fresh.environment)
        items = checklist(
            env,
            self.deps.store.steps(fresh.id),
            self.deps.store.events(fresh.incident_id),
            reader=self.deps.metrics_reader,
        )
        self._keep_message(
            fresh,
            key="checklist_ts",
            text="Post-rollback verification checklist",
            message=blocks.checklist_message(fresh, items),
        )

    # errors -------------------------------------------------------------------

    def _reply(self, run: Run, method: str, **kwargs: Any) -> Any:
        """Call `method` in the run's thread."""
        return self._call(
            run, method, channel=run.slack["channel"], thread_ts=run.slack["thread_ts"], **kwargs
        )

    def _call(self, run: Run, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
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

    def _tell(self, run: Run, text: str) -> None:
        try:
            self.client.chat_postMessage(
                channel=run.slack["channel"], thread_ts=run.slack["thread_ts"], text=text
            )
        except SlackApiError:
            log.exception("%s: could not tell the thread either", run.incident_id)


class SlackProgress(Progress):
    """The runner's Progress, reported into the incident thread."""

    def __init__(self, thread: IncidentThread) -> None:
        self.thread = thread

    def run_started(self, run: Run, *, resumed: bool) -> None:
        self.thread.refresh(run.id)
        if resumed:
            self.thread.say(
                run,
                ":arrows_counterclockwise: The bot process running this rollback stopped "
                "(crash, restart or lost lease); another process resumed it from the approved "
                "plan, without planning again.",
            )
        self.thread.progress(run)

    def step_started(self, run: Run, step: dict[str, Any]) -> None:
        self.thread.progress(run)

    def step_output(self, run: Run, step: dict[str, Any], line: str) -> None:
        log.info("%s: %s: %s", run.incident_id, step["name"], line)

    def step_finished(self, run: Run, step: dict[str, Any], record: StepView) -> None:
        self.thread.progress(run)
        fresh = self.thread.deps.store.run(run.id) or run
        self.thread.step_output(fresh, step, record)

    def run_finished(self, run: Run) -> None:
        self.thread.finished(run)

    def run_expired(self, run: Run) -> None:
        self.thread.refresh(run.id)
        self.thread.say(
            run,
            ":alarm_clock: The approval request expired; nothing was changed. "
            "Request the rollback again if it is still needed.",
        )


class SlackMonitorEvents(MonitorEvents):
    """Monitoring's incidents, posted and updated like any other."""

    def __init__(self, thread: IncidentThread) -> None:
        self.thread = thread

    def opened(self, incident: Incident, run: Run) -> None:
        self.thread.open(incident, run)

    def auto_approved(self, run: Run) -> None:
        self.thread.refresh(run.id)
        self.thread.deps.wake_runner.set()
