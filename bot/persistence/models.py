"""The bot's own tables. Only `bot/persistence/store.py` opens sessions on them.

Runs carry a `version` column: every state transition is a conditional
UPDATE on (id, state, version), so two bot processes, or two approvers
clicking in the same instant, produce exactly one transition on SQLite and on
PostgreSQL alike, without relying on either database's locking dialect.
`target_locks` has one row per (environment, target) that an active run
holds; its primary key is what keeps a second rollback of the same target out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.domain.states import (
    OutboxState,
    RecheckState,
    RunKind,
    RunState,
    StepState,
    VersionState,
)
from bot.domain.verdict import Verdict


class UTCDateTime(TypeDecorator[datetime]):
    """Store naive UTC, hand back aware UTC, on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Verdicts(TypeDecorator[tuple[Verdict, ...]]):
    """A run's verdicts as a JSON list of `Verdict.as_json`, read back as `Verdict`s.

    A JSON column of a typed shape rather than a child table: a run's verdicts are
    written once, with its plan, and read whole (shown with the plan, weighed by an
    approval); nothing selects runs by a verdict (a drill's verdict kind is a column of
    `drills`). None: the run was requested before verdicts were kept.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def process_bind_param(
        self, value: tuple[Verdict, ...] | None, dialect: Dialect
    ) -> list[dict[str, Any]] | None:
        return None if value is None else [v.as_json() for v in value]

    def process_result_value(
        self, value: list[dict[str, Any]] | None, dialect: Dialect
    ) -> tuple[Verdict, ...] | None:
        return None if value is None else tuple(Verdict.from_json(v) for v in value)


def one_of(name: str, column: str, values: type[StrEnum]) -> CheckConstraint:
    """Constrain a column to an enum's values in the database itself (migration 0011)."""
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime]
    environment: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), default="slack")
    opened_by: Mapped[str] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(Text, default="")
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recommendation: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")
    detected_at: Mapped[datetime | None]
    channel: Mapped[str | None] = mapped_column(String(40))
    card_ts: Mapped[str | None] = mapped_column(String(40))
    resolved_at: Mapped[datetime | None]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (  # migration 0005: every lookup by state, target or time is indexed
        Index("ix_runs_state_created_at", "state", "created_at"),
        Index("ix_runs_environment_target_created_at", "environment", "target", "created_at"),
        Index("ix_runs_created_at", "created_at"),
        one_of("ck_runs_state", "state", RunState),
        one_of("ck_runs_kind", "kind", RunKind),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    environment: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(40))
    point: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[list[Any]]
    plan_hash: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))  # indexed with created_at (0005)
    kind: Mapped[str] = mapped_column(
        String(16), default=RunKind.ROLLBACK, server_default=RunKind.ROLLBACK.value
    )
    """`RunKind`: a rollback people requested, a drill, or monitoring's (migration 0011)."""
    version: Mapped[int] = mapped_column(Integer, default=0)
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    review_required: Mapped[bool] = mapped_column(Boolean, default=False)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_manual: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    approved_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None]
    lease_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The fencing token: bumped by every claim; a runner's writes require its own."""
    auto_approve_at: Mapped[datetime | None]
    """When monitoring approves this run itself unless someone vetoes it first."""
    from_version: Mapped[str | None] = mapped_column(Text)
    """The version rolled back from, in the target's words (a point's label), when the plan was
    made; None when the target's points could not be listed (messages fall back to the ref)."""
    to_version: Mapped[str | None] = mapped_column(Text)
    from_key: Mapped[str | None] = mapped_column(Text)
    """`RollbackPoint.key` of the version rolled back from; None for a full-system target
    (its members keep their own)."""
    to_key: Mapped[str | None] = mapped_column(Text)
    verdicts: Mapped[tuple[Verdict, ...] | None] = mapped_column(Verdicts())
    """The reversibility verdicts shown with the plan (`bot.domain.verdict`)."""
    plan_stale_at: Mapped[datetime | None]
    """When an approval found the live plan no longer the requested one; None while current."""
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many times the failed run was approved again (`Workflow.retry`)."""
    leave_maintenance_on: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    """The request asked to leave maintenance on if the rollback fails (the plan's
    maintenance-off step is then not `always`)."""
    notify_customers: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """False when the request chose not to notify customers (no customer e-mail step)."""
    memory: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What steps store for later steps and for a resume (`StepContext.memory`), only."""
    notes: Mapped[list[Any] | None] = mapped_column(default=list)
    """The plan's notes shown with it (force used, estimates); not step memory."""
    slack: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("run_id", "approver", "plan_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    approver: Mapped[str] = mapped_column(String(40))
    plan_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]


class StepRecord(Base):
    __tablename__ = "steps"
    __table_args__ = (
        UniqueConstraint("run_id", "position"),
        Index("ix_steps_state_finished_at", "state", "finished_at"),
        one_of("ck_steps_state", "state", StepState),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    summary: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TargetLock(Base):
    __tablename__ = "target_locks"

    environment: Mapped[str] = mapped_column(String(40), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    incident_id: Mapped[str] = mapped_column(String(40))


class OutboxMessage(Base):
    """A message to people about a run, kept until the sender delivered it
    (`bot.execution.outbox`); a notice to one person may belong to no run (migration 0013)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_run_id", "state", "run_id"),
        one_of("ck_outbox_state", "state", OutboxState),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")


class SlackMessage(Base):
    """The ts of a message the bot posted in a run's thread, by slot (`progress`, `step:3:1`)."""

    __tablename__ = "slack_messages"
    __table_args__ = (Index("ix_slack_messages_channel_ts", "channel", "ts"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    slot: Mapped[str] = mapped_column(String(80), primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]


class EntryKey(Base):
    """One Slack request the bot has acted on (a command, a submission, a click).

    The key says which request it was (a trigger id, a view id and hash, a
    message ts with action and user); a second insert of the same key is how a
    retry or replay is recognised. `outcome` is what the first one did, so the
    second can say so.
    """

    __tablename__ = "entry_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    outcome: Mapped[str | None] = mapped_column(Text)


class BreakGlassReview(Base):
    """The mandatory review of a break-glass run: who owns it, and who did it when.

    Migration 0008. One row per break-glass run, written when it is requested; a run
    is unreviewed while `reviewed_at` is empty (indexed: `/rollback status` and the
    home tab list those).
    """

    __tablename__ = "break_glass_reviews"
    __table_args__ = (Index("ix_break_glass_reviews_reviewed_at", "reviewed_at", "assigned_at"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(40))
    requester: Mapped[str] = mapped_column(String(40))
    reviewer: Mapped[str] = mapped_column(String(40))
    """The approver (user id, or a group id when only groups approve) it is assigned to."""
    assigned_at: Mapped[datetime]
    reviewed_by: Mapped[str | None] = mapped_column(String(40))
    reviewed_at: Mapped[datetime | None]


class Recheck(Base):
    """A re-read of a rolled-back workload, due a while after the rollback succeeded.

    Claimed with a fencing token (`claim_generation`) like a run's lease, so of several bot
    processes exactly one checks it and reports, once (migration 0009).
    """

    __tablename__ = "rechecks"
    __table_args__ = (
        UniqueConstraint("run_id", "position"),
        Index("ix_rechecks_state_due_at", "state", "due_at"),
        one_of("ck_rechecks_state", "state", RecheckState),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    incident_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    """The undo step's position in the run's plan."""
    source: Mapped[str] = mapped_column(String(40))
    """The config target the undo step came from."""
    step: Mapped[str] = mapped_column(String(80))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default=RecheckState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    claim_expires_at: Mapped[datetime | None]
    claim_generation: Mapped[int] = mapped_column(Integer, default=0)
    checked_at: Mapped[datetime | None]
    changed: Mapped[bool | None] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(Text, default="")


class SyncResume(Base):
    """Who pressed Resume sync for a run's suspended GitOps owners, when, and what came of it.

    The primary key is the run: the first press inserts the row before the cluster is
    called, so a second press (or a second approver at the same moment) finds it and is told
    who resumed it, without calling the cluster again (migration 0009, `bot.application.resync`).
    """

    __tablename__ = "sync_resumes"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    by: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    """resuming, resumed, or failed (a later press may try again)."""
    outcome: Mapped[str] = mapped_column(Text, default="")


class Drill(Base):
    """A rollback drill (`bot.application.drills`): what it measured, and the verdict it put to the
    test.

    `steps` holds one entry per step ({position, name, label, part, state, seconds}),
    `targets` the seconds each config target's rollback took; `recover_seconds` is the
    drill's time to recover (first change to verified), `forward_seconds` the way back.
    """

    __tablename__ = "drills"
    __table_args__ = (  # migration 0010
        Index("ix_drills_environment_target_created_at", "environment", "target", "created_at"),
    )

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(40))
    requester: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))
    from_version: Mapped[str] = mapped_column(Text, default="")
    to_version: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    recover_seconds: Mapped[float | None] = mapped_column(Float)
    forward_seconds: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[list[Any]] = mapped_column(default=list)
    targets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdict: Mapped[str | None] = mapped_column(String(40))
    """The reversibility verdict's kind the drill's plan carried (`safe`, `risky`…), if any."""
    verdict_held: Mapped[bool | None] = mapped_column(Boolean)


class TargetVersion(Base):
    """One version of one target and the last thing the bot learnt about it.

    `version` is `RollbackPoint.key` (images, a backup path, a ref): what the point runs,
    stable where refs are renumbered. The newest healthy row is the target's last known
    healthy version; rolled-away rows label their points "rolled back from in INC-…" and
    answer the regression guard "bad" until an approver clears them (`cleared_*`).
    """

    __tablename__ = "target_versions"
    __table_args__ = (one_of("ck_target_versions_state", "state", VersionState),)

    environment: Mapped[str] = mapped_column(String(40), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(Text, default="")
    incident_id: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime]
    cleared_by: Mapped[str | None] = mapped_column(String(40))
    """The approver who cleared a rolled-away version (migration 0012); None while it is bad."""
    cleared_at: Mapped[datetime | None]
    cleared_reason: Mapped[str | None] = mapped_column(Text)
