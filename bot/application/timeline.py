"""The incident timeline and the procedures' root-cause-analysis template, from stored events.

Everything here is derived from the append-only event log, so the template a
team edits after an incident says what the bot recorded, not what somebody
remembers at the end of a long night. The sections people must write (root
cause, contributing factors, action items) stay as the procedures have them.

The RCA is a file people read outside Slack, where `<@U…>` and date tokens mean
nothing: its times are in the workspace's zone (config `time_zone`), each with its
date, and people are named by a `Names` function the caller passes in (the Slack
side resolves ids with `users.info`); this module never talks to Slack.

Its layer is the application only because it reads ORM rows and the held GitOps
owners of `bot.application.resync`; typed run and event records in the domain, with
`held_owners` over them, would make it pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from actions.base import readable
from bot.application.chart import chart_filename
from bot.application.resync import held_owners, revert_note
from bot.domain.aftermath import OFF, RESOLVED, Aftermath
from bot.domain.records import EventRecord as Event
from bot.domain.records import IncidentRecord as Incident
from bot.domain.records import RunRecord as Run
from bot.domain.recovery import recovery, summary_lines

Names = Callable[[str], str]
"""A person's name for a user id (the Slack side resolves it; the id when it cannot)."""


def mention(user_id: str) -> str:
    """The default `Names`: a Slack mention, for text that Slack renders."""
    return f"<@{user_id}>"


@dataclass(frozen=True)
class Moment:
    """One line of the timeline."""

    at: datetime
    label: str


_LABELS = {
    "incident.opened": "Investigation started (incident opened by {actor})",
    "run.requested": "Rollback decision made: rollback requested by {actor}",
    "approval.added": "Approval recorded from {actor}",
    "run.approved": "Rollback approved by {actor}",
    "run.break_glass": "Break-glass rollback by {actor} (mandatory review)",
    "run.reviewed": "Break-glass rollback reviewed by {actor}",
    "run.auto_approved": "Rollback approved automatically by monitoring (veto window ended)",
    "monitoring.alert": "Monitoring alerted again",
    "run.rejected": "Rollback rejected by {actor}",
    "run.cancelled": "Rollback cancelled by {actor}",
    "run.expired": "Approval request expired",
    "run.started": "Rollback initiated",
    "run.resumed": "Rollback resumed after the bot restarted",
    "run.succeeded": "Rollback completed",
    "run.failed": "Rollback failed: manual intervention required",
    "sync.resumed": "GitOps sync resumed by {actor}",
    "run.retry": "Retry of the failed step approved by {actor}",
    "maintenance.left_on": "Maintenance left on after the failure, decided by {actor}",
    "maintenance.turned_off": "Maintenance turned off by {actor}",
    RESOLVED: "Failure marked resolved by {actor}",
}


_COMMUNICATIONS = {
    "http.status_page": "Status page updated",
    "http.webhook": "Internal notification sent",
    "http.customer_email": "Customer notification sent",
}


def versions_of(run: Run) -> tuple[str, str]:
    """The run's (from, to) versions in the target's words; the ref when none were recorded."""
    to = run.to_version or run.point or "the previous version"
    return run.from_version or "", to


def from_to(run: Run) -> str:
    """`from rev 4 (v1.2.4) to rev 3 (v1.2.3)`, or `to rev 3` when the current one is unknown."""
    before, after = versions_of(run)
    return f"from {before} to {after}" if before else f"to {after}"


def outcome_in_words(run: Run) -> str:
    """The run's outcome with each step named by its label (the runner names steps by action).

    `bot.execution.runner.describe_outcome` says `step 4 (kubernetes.rollout_status) failed` and
    `Ran: 1. http.maintenance_on (succeeded)`; people read the labels stored in the plan.
    """
    said = run.outcome or ""
    for step in run.plan:
        number, name = step["position"] + 1, str(step["name"])
        words = str(step.get("label") or readable(name))
        said = said.replace(f"step {number} ({name})", f"step {number} ({words})")
        said = said.replace(f"{number}. {name} (", f"{number}. {words} (")
        if step.get("description"):  # `Not run:` lists the raw requests
            said = said.replace(str(step["description"]), words)
        if "." in name:  # `rolled back (kubernetes.rollout_undo)`; a dotted name is unambiguous
            said = said.replace(name, words)
    return said


OFF_SINCE = "maintenance mode turned off since the failure"


def outcome_now(run: Run, after: Aftermath | None = None) -> str:
    """The run's outcome in words (`outcome_in_words`) as it stands now: corrected by what
    people did since it was written (`after`, `bot.domain.aftermath`). Maintenance
    turned off is no longer ON, nor left undone; a failure marked resolved needs no more
    intervention. Every view that states the outcome (thread, card, status, RCA) renders
    this one text.
    """
    said = outcome_in_words(run)
    if after is not None and after.resolved_by:
        said = said.replace(" Manual intervention required.", "")
    if after is None or not after.turned_off_by:
        return said
    said = said.replace("maintenance mode is ON", OFF_SINCE)
    off = {
        words
        for step in run.plan
        if step.get("name") == OFF
        for words in (str(step.get("description")), str(step.get("label") or readable(OFF)))
    }
    undone = sentence_after(said, "Not run:")
    if not undone:
        return said
    left = "; ".join(part for part in undone.split("; ") if part not in off)
    kept = f"Not run: {left}. " if left else ""
    return said.replace(f"Not run: {undone}. ", kept)


def sentence_after(text: str, lead: str) -> str:
    """The sentence of `text` that starts with `lead`, without the lead (the runner's outcome)."""
    start = text.find(lead)
    if start < 0:
        return ""
    rest = text[start + len(lead) :].strip()
    end = rest.find(". ")
    return (rest if end < 0 else rest[:end]).rstrip(".")


def moments(
    incident: Incident,
    events: Sequence[Event],
    *,
    words: dict[str, str] | None = None,
    names: Names = mention,
) -> list[Moment]:
    """Return the timeline: detection, the recorded events, and when service was restored.

    `words` names steps for people by action name (the labels stored in the plans);
    `names` names people by user id.
    """
    words = words or {}
    lines = [Moment(incident.detected_at or incident.created_at, "Issue first detected")]
    for event in events:
        label = _LABELS.get(event.kind)
        if label is not None:
            lines.append(Moment(event.at, label.format(actor=_who(event.actor, names))))
        elif event.kind == "review.assigned":
            owner = str(event.detail.get("reviewer") or "the approvers")
            lines.append(Moment(event.at, f"Mandatory review assigned to {names(owner)}"))
        elif event.kind == "step.failed":
            name = str(event.detail.get("name"))
            lines.append(Moment(event.at, f"Step failed: {words.get(name, name)}"))
        elif event.kind == "recheck.done":
            lines.append(Moment(event.at, f"Re-check: {event.detail.get('outcome', '')}"))
        elif event.kind == "step.succeeded" and event.detail.get("name") in _COMMUNICATIONS:
            label = _COMMUNICATIONS[event.detail["name"]]
            lines.append(Moment(event.at, f"{label}: {event.detail.get('summary', 'sent')}"))
    restored = service_restored(events)
    if restored is not None:
        lines.append(Moment(restored, "Service restored (health check passing)"))
    return sorted(lines, key=lambda m: m.at)


def service_restored(events: Sequence[Event]) -> datetime | None:
    """Return when the health check passed, or when the run succeeded if it had none."""
    for event in events:
        if event.kind == "step.succeeded" and "health" in str(event.detail.get("name", "")):
            return event.at
    return next((e.at for e in events if e.kind == "run.succeeded"), None)


def _first(events: Sequence[Event], *kinds: str) -> datetime | None:
    return next((e.at for e in events if e.kind in kinds), None)


def _who(actor: str | None, names: Names) -> str:
    if actor is None:
        return "the bot"
    return actor if actor == "monitoring" else names(actor)


def duration(delta: timedelta | None) -> str:
    """Say a duration the way people write it: 45s, 3m 05s, 1h 02m."""
    if delta is None:
        return "n/a"
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _span(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start and end else None


def stamp(at: datetime, zone: tzinfo) -> str:
    """`2026-11-24 04:02:05 CET`: a moment with its date, in `zone`."""
    local = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or zone}"


def recovery_summary(incident: Incident, events: Sequence[Event]) -> list[str]:
    """The summary's recovery metrics (time to detect, decide, approve, recover) and chart."""
    return [
        *summary_lines(recovery(incident, events)),
        f"- **Timeline chart**: {chart_filename(incident.id)} (phases and step durations)",
    ]


def rca_template(
    incident: Incident,
    runs: Sequence[Run],
    events: Sequence[Event],
    *,
    zone: tzinfo = UTC,
    names: Names = lambda user_id: user_id,
    afters: Mapping[str, Aftermath] | None = None,
) -> str:
    """Render the procedures' RCA template with summary and timeline filled in.

    Times are in `zone` with their dates; people are named by `names` (default: the id);
    `afters`, by run id, what people decided since a run failed (`outcome_now`).
    """
    afters = afters or {}
    start = incident.detected_at or incident.created_at
    initiated = _first(events, "run.started")
    completed = _first(events, "run.succeeded", "run.failed")
    restored = service_restored(events)
    end = restored or completed
    impact = incident.summary or "[Description of user impact]"
    lines = [
        "# Post-Rollback Root Cause Analysis",
        "",
        "## Incident Summary",
        f"- **Incident ID**: {incident.id}",
        f"- **Date/Time**: {stamp(start, zone)}",
        f"- **Duration**: {duration(_span(start, end))}",
        f"- **Rollback Time**: {duration(_span(initiated, completed))}",
        f"- **Impact**: {impact}",
        f"- **Severity**: {incident.severity.capitalize()}",
        f"- **Target**: {incident.target} in {incident.environment}",
        f"- **Opened by**: {_who(incident.opened_by, names)}",
    ]
    for run in runs:
        lines.append(f"- **Versions**: {run.target} {from_to(run)}")
        outcome = outcome_now(run, afters.get(run.id)) or "not finished"
        lines.append(f"- **Outcome**: {run.state} — {outcome}")
        if run.review_required:
            owner = next(
                (e.detail.get("reviewer") for e in events if e.kind == "review.assigned"), None
            )
            to = f", assigned to {names(str(owner))}" if owner else ""
            lines.append(f"- **Review**: break-glass rollback, mandatory review{to}")
        lines += [f"- **GitOps**: {revert_note(held)}" for held in held_owners(run)]
    lines += recovery_summary(incident, events)
    lines += ["", "## Timeline"]
    words = {str(s["name"]): str(s.get("label") or s["name"]) for run in runs for s in run.plan}
    timeline = moments(incident, events, words=words, names=names)
    lines += [f"- **{stamp(m.at, zone)}**: {m.label}" for m in timeline]
    lines += [
        "",
        "## Root Cause",
        "[Detailed description of what caused the issue]",
        "",
        "## Contributing Factors",
        "- [Factor 1]",
        "- [Factor 2]",
        "- [Factor 3]",
        "",
        "## What Went Well",
        "- [Positive aspects of the response]",
        "",
        "## What Could Be Improved",
        "- [Areas for improvement]",
        "",
        "## Action Items",
        "- [ ] [Action item 1] - Owner: [Name] - Due: [Date]",
        "- [ ] [Action item 2] - Owner: [Name] - Due: [Date]",
        "- [ ] [Action item 3] - Owner: [Name] - Due: [Date]",
        "",
        "## Prevention Measures",
        "- [Measure 1]",
        "- [Measure 2]",
        "- [Measure 3]",
        "",
    ]
    return "\n".join(lines)
