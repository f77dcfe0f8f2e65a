"""Every Slack callback, block and action id, defined once."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict


class Callback(enum.StrEnum):
    ROLLBACK_MODAL = "rollback_modal"


class Block(enum.StrEnum):
    POINT = "point"
    SEVERITY = "severity"
    FUNCTIONAL = "q_functional"
    FIXABLE = "q_fixable_quickly"
    DATA = "q_data_at_risk"
    IMPACT = "q_severe_impact"
    RECOMMENDATION = "recommendation"
    SUMMARY = "summary"
    PERSON_CHECKS = "person_checks"
    OPTIONS = "options"
    CONFIRM = "confirm_text"
    NOTIFY = "notify_customers"
    APPROVAL = "approval_buttons"
    VERIFY = "verify_checklist"
    FAILURE = "failure_actions"
    REVIEW = "review_actions"
    GITOPS = "gitops_actions"


class Action(enum.StrEnum):
    POINT = "point_select"
    SEVERITY = "severity_choice"
    FUNCTIONAL = "functional_choice"
    FIXABLE = "fixable_quickly_choice"
    DATA = "data_at_risk_choice"
    IMPACT = "severe_impact_choice"
    SUMMARY = "summary_input"
    PERSON_CHECKS = "person_checks_boxes"
    OPTIONS = "options_boxes"
    CONFIRM = "confirm_input"
    NOTIFY = "notify_customers_choice"
    APPROVE = "approve_run"
    REJECT = "reject_run"
    CANCEL = "cancel_run"
    VERIFY = "verify_tick"
    REPLAN = "replan_run"
    RETRY = "retry_failed_step"
    LEAVE_MAINTENANCE_ON = "leave_maintenance_on"
    MAINTENANCE_OFF = "turn_maintenance_off"
    RESOLVE = "mark_resolved"
    REARM = "rearm_auto_rollback"
    OPEN_THREAD = "open_thread"
    MARK_REVIEWED = "mark_reviewed"
    RESUME_SYNC = "resume_sync"


QUESTION_BLOCKS = {
    "functional": (Block.FUNCTIONAL, Action.FUNCTIONAL),
    "fixable_quickly": (Block.FIXABLE, Action.FIXABLE),
    "data_at_risk": (Block.DATA, Action.DATA),
    "severe_impact": (Block.IMPACT, Action.IMPACT),
}


class ModalMeta(BaseModel):
    """The modal's private_metadata: where it came from and what it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str
    target: str
    requester: str
    channel_id: str
    point_hint: str | None = None
    avoid: str | None = None
    """A re-plan's version rolled back from (`RollbackPoint.key`): never preselected, even
    when the run never got to record it as rolled away (a newer deploy made it stale)."""
    avoid_incident: str | None = None

    def dump(self) -> str:
        """Serialize for private_metadata (3000 characters at most)."""
        return self.model_dump_json()

    @classmethod
    def load(cls, raw: str) -> ModalMeta:
        """Parse private_metadata."""
        return cls.model_validate_json(raw)
