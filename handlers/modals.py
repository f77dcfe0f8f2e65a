"""The rollback modal: fill it, update the recommendation live, take the submission.

Every change of an answer re-renders the whole modal from the view's state
with `views.update` (guarded by the view's hash, so a stale update loses to a
newer one). The target's rollback points and machine checks are cached for a
minute per (environment, target, point), so clicking through the questions
does not query Kubernetes or pg_restore on every click.

Submission validates what it can within Slack's 3 seconds and answers with
field errors; otherwise it swaps the modal to "Creating incident…" and calls
`bot.application.flows.Flows.open_incident` (plan, request, thread), then says in the
modal where the incident is, or why nothing was opened and what to do: a
refusal gives the form back with every answer kept and the reason at its top;
Slack refusing the thread is said in the modal (the flow has then withdrawn the
run and freed the target). If the modal is gone by then, the person gets a DM.
A payload that does not fit (an outdated form, an unknown environment) is
answered in the modal by `handlers.payloads`' parsers.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from actions.base import ActionError, Check, RollbackPoint
from bot.application.requests import IncidentRequest, Offer, ThreadNotOpened
from bot.config import Environment, UnknownTarget, describe_target
from bot.domain.decision import Answers, Severity, decide, with_verdict
from bot.domain.records import RunRecord
from bot.domain.verdict import Verdict, holders_from
from bot.execution.planner import customer_preview
from bot.execution.workflow import BREAK_GLASS_PHRASE, Refused
from handlers import text as t
from handlers.deps import Deps
from handlers.errors import failure_text, tell
from handlers.flows import drills_for, flows_for
from handlers.ids import QUESTION_BLOCKS, Action, Block, Callback, ModalMeta
from handlers.lazy import BUSY, Arrivals, after_ack
from handlers.modal_blocks import (
    LEAVE_MAINTENANCE_ON,
    CustomerNotice,
    ModalContent,
    message_view,
    rollback_modal,
)
from handlers.payloads import OUTDATED_FORM, BadPayload, FormState, ModalEvent, Where, modal_event
from handlers.text import permalink

log = logging.getLogger(__name__)
Epoch = tuple[str, str] | None
"""A target's newest run (id, state) when its read was made; None: it never had one."""
CACHE_SECONDS = 60.0
"""How long a form's re-renders (an answer changed) reuse its target's read."""
SHARED_SECONDS = 2.0
"""How long a newly opened form may show another form's read of the same target.

An incident storm opens the same form many times a second (people, monitoring); each would
read the cluster again (the Deployment, its ReplicaSets, the verdict's evidence). A read is
shared only while the target's newest run is the same as when it was read (none started,
none changed state) and for at most these seconds; the plan itself is built from a fresh
read when the form is submitted, and checked again on approval."""
SUBMITTED_KEPT = 1000


def resolve_point(
    points: list[RollbackPoint], hint: str | None, default: RollbackPoint | None = None
) -> str | None:
    """Match `to <x>` against the points: exact ref, ref tail, label start, else pass it on.

    Without a hint, the offered default (`bot.application.flows.Offer`: the last known healthy
    version,
    never one rolled away from); None leaves the choice to the person.
    """
    if not hint:
        return default.ref if default else None
    for point in points:
        tail = point.ref.split(":", 1)[-1]
        if hint in (point.ref, tail, tail.rsplit("/", 1)[-1]) or point.label.startswith(hint):
            return point.ref
    return hint


def points_key(meta: ModalMeta) -> tuple[str, str, str | None]:
    """The cache key of a target's rollback points (its checks and verdicts have their own)."""
    return (meta.environment, f"{meta.target}#points", None)


class ModalService:
    """Builds and updates the modal; takes its submission."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.flows = flows_for(deps)
        self.drills = drills_for(deps)
        self._cache: dict[tuple[str, str, str | None], tuple[float, Epoch, Any]] = {}
        self._lock = threading.Lock()
        self._newest: dict[str, float] = {}
        self._view_locks: dict[str, threading.Lock] = {}
        self._submitted: OrderedDict[str, None] = OrderedDict()

    def _cached(
        self, key: tuple[str, str, str | None], compute: Any, *, fresh: bool, epoch: Epoch
    ) -> Any:
        """The target's read for `key`: another form's while it may be shared, else new."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[1] == epoch and now - hit[0] < (SHARED_SECONDS if fresh else CACHE_SECONDS):
            return hit[2]
        value = compute()
        self._cache[key] = (now, epoch, value)
        return value

    def _epoch(self, meta: ModalMeta) -> Epoch:
        """The target's newest run and its state (one indexed read): a read made before a
        run started or changed state is never shown after."""
        newest = self.deps.reads.runs(environment=meta.environment, target=meta.target, limit=1)
        return (newest[0].id, str(newest[0].state)) if newest else None

    def content(self, meta: ModalMeta, form: FormState | None) -> ModalContent:
        """Compute what the modal shows for `form` (None: first open, read fresh)."""
        fresh = form is None
        epoch = self._epoch(meta)
        env = self.deps.config.environment(meta.environment)
        params = env.targets[meta.target]
        problem = None
        points: list[RollbackPoint] = []
        default: RollbackPoint | None = None
        note = ""
        try:
            listed = self._cached(
                points_key(meta),
                lambda: self.deps.planner.points(env, meta.target),
                fresh=fresh,
                epoch=epoch,
            )
            offer = self.flows.offer(
                meta.environment,
                meta.target,
                listed,
                avoid={meta.avoid: meta.avoid_incident or "this incident"} if meta.avoid else None,
            )
            points, default = offer.points, offer.default
            note = _healthy_note(offer)
        except (ActionError, OSError) as exc:
            problem = f"Could not list rollback points: {exc}"  # escaped where shown
        selected = (
            form.point if form and form.point else resolve_point(points, meta.point_hint, default)
        )
        if selected and points and selected not in {p.ref for p in points}:
            points = [*points, RollbackPoint(ref=selected, label=selected)]
        checks = self._checks(meta, selected, fresh=fresh, epoch=epoch)
        holder = self.deps.reads.lock_holder(environment=meta.environment, targets=[meta.target])
        if holder:
            checks = [*checks, Check("Target not locked by another incident", False, holder)]
        else:
            checks = [*checks, Check("Target not locked by another incident", True)]
        form = form or FormState()
        verdicts = self._verdicts(
            meta, selected, fresh=fresh, epoch=epoch, force="force" in form.options
        )
        return ModalContent(
            meta=meta,
            target_line=describe_target(params),
            points=points,
            selected=selected,
            checks=checks,
            decision=with_verdict(decide(form.answers), verdicts),
            answers=form.answers,
            severity=form.severity,
            summary=form.summary,
            ticked=form.ticked,
            options=form.options,
            break_glass_allowed=env.break_glass,
            force_allowed=_force_changes_something(env, meta.target),
            maintenance=env.maintenance is not None,
            customers=_customers(env, form),
            automatic_steps=_automatic_steps(env, meta.target),
            problem=problem,
            fixable_help=self.drills.help_for(environment=meta.environment, target=meta.target),
            point_note=note,
        )

    def _verdicts(
        self, meta: ModalMeta, point: str | None, *, fresh: bool, epoch: Epoch, force: bool
    ) -> tuple[Verdict, ...]:
        """The reversibility verdicts, so the recommendation says when fixing forward is safer."""
        env = self.deps.config.environment(meta.environment)
        holders = holders_from(self.deps.reads.lock_holder, meta.environment, exclude=None)
        try:
            verdicts: tuple[Verdict, ...] = self._cached(
                (meta.environment, f"{meta.target}#verdict{'#forced' * force}", point),
                lambda: self.deps.planner.verdicts(
                    env, meta.target, point, holders=holders, force=force
                ),
                fresh=fresh,
                epoch=epoch,
            )
            return verdicts
        except (ActionError, OSError):
            return ()  # the checks above say what cannot be read

    def _checks(
        self, meta: ModalMeta, point: str | None, *, fresh: bool, epoch: Epoch
    ) -> list[Check]:
        env = self.deps.config.environment(meta.environment)
        try:
            checks: list[Check] = self._cached(
                (meta.environment, f"{meta.target}#checks", point),
                lambda: self.deps.planner.checks(env, meta.target, point),
                fresh=fresh,
                epoch=epoch,
            )
            return checks
        except (ActionError, OSError) as exc:
            return [Check("Pre-rollback checks", False, str(exc))]

    def fill(self, *, view_id: str, meta: ModalMeta, form: FormState | None = None) -> None:
        """Replace the Loading… view with the real modal (with earlier answers, to re-plan)."""
        self.deps.client.views_update(
            view_id=view_id, view=rollback_modal(self.content(meta, form))
        )

    def replan(self, *, trigger_id: str, run: RunRecord, user: str, channel: str) -> None:
        """Open the rollback form again for a failed run's target, its answers carried over.

        A new request from the same severity, flowchart answers, impact summary and choices
        (leave maintenance on, customers not notified); the point is chosen afresh from what
        the target lists now (the failed run changed it).
        """
        incident = self.deps.reads.incident(run.incident_id)
        meta = ModalMeta(
            environment=run.environment,
            target=run.target,
            requester=user,
            channel_id=channel,
            avoid=run.from_key,
            avoid_incident=run.incident_id,
        )
        opened = self.deps.client.views_open(
            trigger_id=trigger_id,
            view=message_view(meta, "Roll back", f"Planning again for *{t.esc(run.target)}*…"),
        )
        form = FormState()
        if incident is not None:
            leave = run.leave_maintenance_on
            form = FormState(
                severity=Severity(incident.severity),
                answers=Answers(**incident.answers),
                summary=incident.summary,
                options=frozenset({LEAVE_MAINTENANCE_ON}) if leave else frozenset(),
                notify=None if run.notify_customers else "no",
            )
        self.fill(view_id=opened["view"]["id"], meta=meta, form=form)

    def on_change(self, event: ModalEvent, client: WebClient) -> None:
        """Re-render the modal after an answer changed; the person's last click wins.

        Clicks are acked at once and rendered afterwards, possibly in parallel. Each
        payload carries the whole form as it was at that click, so the newest one is the
        truth: renders run one at a time per view, and a render that a newer click has
        overtaken is skipped rather than sent (Slack's view hash would instead refuse the
        newest one whenever an older render landed first). Once the form is submitted no
        render is sent, so a late one never replaces what the submission says.
        """
        view_id, stamp = event.view_id, event.stamp
        with self._lock:
            if stamp < self._newest.get(view_id, 0.0) or view_id in self._submitted:
                return
            self._newest[view_id] = stamp
            view_lock = self._view_locks.setdefault(view_id, threading.Lock())
        with view_lock:
            if self._newest.get(view_id) != stamp or view_id in self._submitted:
                return
            content = self.content(event.meta, event.form)
            client.views_update(view_id=view_id, view=rollback_modal(content))

    def submitted(self, view_id: str) -> None:
        """Stop rendering a modal that has been submitted; drop what was kept for it."""
        with self._lock:
            self._submitted[view_id] = None
            while len(self._submitted) > SUBMITTED_KEPT:
                self._submitted.popitem(last=False)
            self._newest.pop(view_id, None)
            lock = self._view_locks.pop(view_id, None)
        if lock is not None:
            with lock:  # a render already sending finishes before the submission speaks
                pass

    def validate(self, meta: ModalMeta, form: FormState) -> dict[str, str]:
        """Return field errors by block id; empty when the form can be submitted."""
        errors: dict[str, str] = {}
        if form.severity is None:
            errors[Block.SEVERITY] = "Choose a severity."
        for name in decide(form.answers).missing:
            errors[QUESTION_BLOCKS[name][0]] = "Answer this question to get a recommendation."
        if "break_glass" in form.options and form.confirmation != BREAK_GLASS_PHRASE:
            errors[Block.CONFIRM] = f"Type {BREAK_GLASS_PHRASE} to run without a second approver."
        elif form.confirmation.strip() and "break_glass" not in form.options:
            errors[Block.OPTIONS] = (
                "Tick Break-glass to run without a second approver, or clear the "
                f"{BREAK_GLASS_PHRASE} box to request a normal approval."
            )
        if form.point is None and self._cache.get(points_key(meta)):
            # no point preselected (production runs the last known healthy version): a person
            # chooses; Slack asks for it too, this holds for a replayed or hand-made payload
            errors[Block.POINT] = "Choose the point to roll back to."
        # Read from the form and this process's memory only: it runs before the ack. A target
        # another incident holds is refused after the ack, by the flow taking its lock
        # ("Nothing was requested: app in prod is already being rolled back in INC-…").
        return errors

    def submit(self, event: ModalEvent) -> str:
        """Open the incident through the flow; say the result in the modal (or by DM).

        Return what it did, as recorded for a retry or a replay of the form to be told."""
        form, meta = event.form, event.meta
        request = IncidentRequest(
            environment=meta.environment,
            target=meta.target,
            requester=event.user,
            severity=form.severity or Severity.HIGH,
            answers=form.answers,
            point=form.point,
            summary=form.summary,
            force="force" in form.options,
            break_glass="break_glass" in form.options,
            confirmation=form.confirmation,
            ticked=form.ticked,
            leave_maintenance_on=LEAVE_MAINTENANCE_ON in form.options,
            notify_customers=_notify(form),
        )
        key = submission_key(event)
        try:
            opened = self.flows.open_incident(request)
        except Refused as exc:
            outcome = f"nothing was requested: {exc}"
            self.flows.settle(key, outcome)
            self._form_again(event, f"Nothing was requested: {exc}")
            return outcome
        except ThreadNotOpened as exc:
            outcome = f"the incident could not be opened: {exc.reason}"
            self.flows.settle(key, outcome)
            self._say(event, "Not opened", not_opened_text(meta.target, exc), run_id=exc.run_id)
            return outcome
        outcome = f"it opened {opened.incident.id}"
        self.flows.settle(key, outcome)
        run = opened.run
        link = permalink(run.slack["channel"], run.slack["thread_ts"])
        state = (
            "break-glass: approved, starting now"
            if opened.started
            else "waiting for a second person to approve"
        )
        self._say(event, "Incident created", f"*{opened.incident.id}* opened: {state}.\n{link}")
        return outcome

    def _form_again(self, event: ModalEvent, problem: str) -> None:
        """Give the person their form back, every answer kept, saying why nothing was requested.

        What is found only after the ack (a target another incident holds, a plan the target
        refuses: a paused Deployment, the current revision picked) must not cost the person
        the form they filled in at 3 a.m.: they change what is wrong and submit again.
        """
        with self._lock:
            self._submitted.pop(event.view_id, None)  # it may be changed and re-rendered again
        content = replace(self.content(event.meta, event.form), problem=problem)
        try:
            self.deps.client.views_update(view_id=event.view_id, view=rollback_modal(content))
        except (SlackApiError, OSError) as exc:
            log.warning("modal %s could not be updated (%s); telling by DM", event.view_id, exc)
            tell(self.deps.client, Where(user=event.user), f":warning: {t.esc(problem)}")

    def _say(self, event: ModalEvent, title: str, body: str, *, run_id: str | None = None) -> None:
        """Show `body` in the modal; if the modal is gone, tell the person by DM.

        With the run it is about, the DM goes through the outbox, so a Slack outage delays
        it instead of dropping it.
        """
        try:
            self.deps.client.views_update(
                view_id=event.view_id, view=message_view(event.meta, title, body)
            )
        except (SlackApiError, OSError) as exc:
            log.warning("modal %s could not be updated (%s); telling by DM", event.view_id, exc)
            if run_id is None:
                tell(self.deps.client, Where(user=event.user), body)
            else:
                self.flows.notify_person(run_id, user=event.user, text=body)


def _customers(env: Environment, form: FormState) -> CustomerNotice | None:
    """Ask whether customers are told where anything customer-facing is configured."""
    comms = env.communications
    if comms.customer_email is None and comms.status_page is None:
        return None
    told = [f"e-mail to {comms.customer_email.to}"] if comms.customer_email else []
    if comms.status_page is not None:
        told.insert(0, f"status page {urlsplit(comms.status_page.url).hostname or 'configured'}")
    return CustomerNotice(
        to=" and ".join(told),
        severities=tuple(comms.notify_customers),
        choice=form.notify or "policy",
        preview=tuple(customer_preview(env)),
    )


def _notify(form: FormState) -> bool | None:
    """The form's choice on customer notification; None: as the config's policy says."""
    return None if form.notify in (None, "policy") else form.notify == "yes"


def _healthy_note(offer: Offer) -> str:
    """Say under the point which version is known healthy, and why nothing is preselected."""
    known = offer.known
    if known.healthy is None:
        return ""
    where = f" (verified in {known.healthy_incident})" if known.healthy_incident else ""
    if offer.at_healthy:
        return (
            f"Production already runs the last known healthy version, {offer.healthy_label}"
            f"{where}: choose a point explicitly."
        )
    return f"Last known healthy: {offer.healthy_label}{where}."


def not_opened_text(target: str, exc: ThreadNotOpened) -> str:
    """What a person reads when the incident thread could not be opened."""
    if not exc.withdrawn:
        return f":warning: The incident thread could not be opened: {exc.reason}. {exc.advice}"
    return (
        f":warning: The incident could not be opened: {exc.reason}. "
        f"The request was withdrawn and {t.esc(target)} is free again.\n*What to do:* {exc.advice}"
    )


def _has_kind(env: Environment, target: str, kind: str) -> bool:
    return any(env.targets[n].kind == kind for n in env.members(target))


def _force_changes_something(env: Environment, target: str) -> bool:
    """Force is offered only where a plan reads it: a Docker swap of a stopped container,
    a blue-green switch past its health gate; a database rollback has no use for it."""
    return _has_kind(env, target, "docker") or _has_kind(env, target, "bluegreen")


def _automatic_steps(env: Environment, target: str) -> list[str]:
    steps = []
    if env.maintenance is not None:
        steps.append("The bot puts the system in maintenance mode and takes it out after")
    if any(getattr(env.targets[n], "workers", None) for n in env.members(target)):
        steps.append("The bot stops background workers and restarts them after")
    if _has_kind(env, target, "database"):
        steps.append("The bot backs up the current database first and verifies the backup")
    return steps


def register(app: App, deps: Deps) -> None:
    """Listen for answer changes and the submission."""
    service = ModalService(deps)
    live = [Action.POINT, Action.SEVERITY, *(a for _, a in QUESTION_BLOCKS.values())]

    for action_id in live:

        @app.action(action_id)
        @after_ack(deps.later)
        def changed(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            try:
                event = _event(body, deps)
            except BadPayload as exc:
                _outdated(client, body, str(exc))
                return
            service.on_change(event, client)

    arrivals = Arrivals()

    @app.view(Callback.ROLLBACK_MODAL)
    def submitted(ack: Ack, body: dict[str, Any]) -> None:
        try:
            event = _event(body, deps)
        except BadPayload as exc:
            ack(response_action="update", view=message_view(None, "Form out of date", str(exc)))
            return
        key = submission_key(event)
        seen = arrivals.arrive(key)
        if seen is not None:
            said = seen.repeated("form")
            ack(response_action="update", view=message_view(event.meta, "Already submitted", said))
            return
        errors = service.validate(event.meta, event.form)
        if errors or not deps.later.has_room():
            arrivals.forget(key)  # it changed nothing: the same form may be sent again
            if errors:
                ack(response_action="errors", errors=errors)
            else:
                ack(response_action="update", view=message_view(event.meta, "Busy", BUSY))
            return
        ack(
            response_action="update",
            view=message_view(event.meta, "Creating incident", "Creating incident… one moment."),
        )
        work = _Submission(service, event, key, arrivals)
        if not deps.later.submit(work, on_error=_form_failed(service, event, key, arrivals)):
            arrivals.forget(key)
            deps.later.notify(service._say, event, "Busy", BUSY)  # not on the answering thread


@dataclass(frozen=True)
class _Submission:
    """After the ack (on `deps.later`): record the form once, open the incident, say so in
    the modal. Nothing before the ack touched the database, Slack or the target."""

    service: ModalService
    event: ModalEvent
    key: str
    arrivals: Arrivals

    def __call__(self) -> None:
        received = self.arrivals.record(self.service.flows, self.key)
        if not received.first:
            said = received.repeated("form")
            self.service._say(self.event, "Already submitted", said)
            return
        self.service.submitted(self.event.view_id)
        self.arrivals.settle(self.key, self.service.submit(self.event))


def _form_failed(
    service: ModalService, event: ModalEvent, key: str, arrivals: Arrivals
) -> Callable[[str], None]:
    """On a failure after the ack: the form back in the modal, every answer kept, saying what
    went wrong, or (when drawing the form needs what failed: the bot's database away) the
    modal saying it, instead of "Creating incident…" for ever; the same form may be
    submitted again once the cause is gone (`Later` calls this while handling the
    exception, `handlers.errors.failure_text`)."""

    def failed(ref: str) -> None:
        arrivals.forget(key)
        problem = failure_text(sys.exc_info()[1], ref).removeprefix(":warning: ")
        try:
            service._form_again(event, problem)
        except Exception as exc:  # the form needs the database too: say it without the form
            log.warning("the form could not be drawn again (%s); saying why in the modal", exc)
            service._say(event, "Not created", problem)

    return failed


def submission_key(event: ModalEvent) -> str:
    """The same form submitted twice: its view id and its hash are the same.

    A form with field errors is not keyed (it changed nothing); once a form is
    accepted, the bot replaces the view, so a legitimate second submission of
    the same id and hash cannot happen: only a Slack retry or a replay can.
    """
    return f"view:{event.view_id}:{event.view_hash}"


def _event(body: dict[str, Any], deps: Deps) -> ModalEvent:
    """Parse a modal payload and check its environment and target are still configured."""
    event = modal_event(body)
    try:
        deps.config.target(event.meta.environment, event.meta.target)
    except UnknownTarget as exc:
        raise BadPayload(f"{OUTDATED_FORM} ({exc})") from None
    return event


def _outdated(client: WebClient, body: dict[str, Any], text: str) -> None:
    view = body.get("view")
    view_id = view.get("id") if isinstance(view, dict) else None
    if isinstance(view_id, str):
        client.views_update(view_id=view_id, view=message_view(None, "Form out of date", text))
