"""The incident flows on a store, with the incident thread they talk to recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.application.failures import DECIDED
from bot.application.flows import Flows
from bot.application.requests import CHANGED, IncidentRequest, ThreadNotOpened
from bot.config import parse_config
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.models import Incident, Run
from bot.persistence.store import Store
from tests.fakes.config import ALICE, config_dict
from tests.fakes.rows import set_run_fields


@dataclass
class RecordingThread:
    """The Slack side: posts nothing, records what the flows asked, refuses when told to."""

    refuse: ThreadNotOpened | None = None
    runner_first: Workflow | None = None
    opened: list[str] = field(default_factory=list)
    checklists: list[str] = field(default_factory=list)
    stale_told: list[str] = field(default_factory=list)
    store: Store | None = None

    @property
    def refreshed(self) -> list[str]:
        """The runs whose card and plan the flows queued for a redraw, in order."""
        return self._queued(CHANGED)

    @property
    def decisions(self) -> list[str]:
        """The runs whose failure announcement, card, plan and progress the flows queued for a
        redraw, in order."""
        return self._queued(DECIDED)

    def _queued(self, kind: str) -> list[str]:
        assert self.store is not None
        messages = [
            m
            for run in self.store.runs.find(limit=10_000)
            for m in self.store.outbox.messages(run.id)
        ]
        return [m.run_id for m in sorted(messages, key=lambda m: m.id) if m.kind == kind]

    def open(self, incident: Incident, run: Run) -> Run:
        if self.runner_first is not None:  # the runner picks the approved run up meanwhile
            self.runner_first.start(run)
        if self.refuse is not None:
            raise self.refuse
        self.opened.append(incident.id)
        assert self.store is not None
        set_run_fields(self.store, run.id, slack={"channel": "C1", "thread_ts": "1.0"})
        return self.store.runs.get(run.id) or run

    def post_checklist(self, run: Run) -> None:
        self.checklists.append(run.id)

    def stale(self, run_id: str) -> None:
        self.stale_told.append(run_id)


def make_flows(store: Store, planner: Planner, thread: RecordingThread, **prod: Any) -> Flows:
    config = parse_config(config_dict(**prod), path=Path("test.yml"))
    workflow = Workflow(store=store, config=config)
    return Flows(store=store, workflow=workflow, config=config, planner=planner, thread=thread)


def request(**overrides: Any) -> IncidentRequest:
    fields: dict[str, Any] = {
        "environment": "prod",
        "target": "app",
        "requester": ALICE,
        "severity": Severity.HIGH,
        "answers": Answers(functional=False, data_at_risk=False, severe_impact=True),
        "point": "1",
    }
    return IncidentRequest(**{**fields, **overrides})
