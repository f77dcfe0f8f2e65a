"""The verdict says which other incidents' fixes a rollback takes away (issue 31, point 1).

The history is the bot's own, in the real store (SQLite and PostgreSQL), written as the runner
writes it: a rollback that succeeded ended its incident by moving its target to a version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from actions.base import ActionError, Check, Finding, Level, RollbackPoint
from bot.config import RollbackConfig
from bot.domain.states import RunKind
from bot.domain.verdict import Verdict
from bot.execution.fixes import StoreHistory
from bot.execution.planner import Planner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store
from bot.persistence.versions import VersionBook
from tests.fakes.config import BOB, Clock
from tests.fakes.history import rolled

V123, V124, V125 = (f"registry.example/voxflow/api:v1.2.{n}" for n in (3, 4, 5))


@dataclass
class Listed:
    """A target listing revisions newest first, each running its image (its version)."""

    images: dict[str, str] = field(default_factory=lambda: {"5": V125, "4": V124, "3": V123})
    current: str | None = "5"
    unreadable: bool = False

    def points(self) -> list[RollbackPoint]:
        if self.unreadable:
            raise ActionError("the API server does not answer")
        return [
            RollbackPoint(ref=ref, label=f"rev {ref}", is_current=ref == self.current, version=i)
            for ref, i in self.images.items()
        ]

    def checks(self, ref: str | None) -> list[Check]:
        return []


def verdict(
    store: Store, config: RollbackConfig, ref: str, target: Listed | None = None
) -> Verdict:
    listed = target or Listed()
    planner = Planner(
        factory=lambda params: listed,  # type: ignore[arg-type,return-value]
        history=StoreHistory(VersionBook(store), config),
    )
    (found,) = planner.verdicts(config.environment("prod"), "app", ref)
    return found


def fixes(found: Verdict) -> list[Finding]:
    """The findings `bot.execution.fixes` adds."""
    bases = ("fix ", "no fix taken away", "marked bad ")
    return [f for f in found.evidence if f.basis.startswith(bases) or "unknown" in f.text]


def test_rolling_back_past_the_version_that_ended_an_incident_is_risky(
    store: Store, config: RollbackConfig, workflow: Workflow, clock: Clock
) -> None:
    # v1.2.3 broke in INC-A; the bot rolled forward to v1.2.4, which ended it; v1.2.5 came later
    ended = rolled(workflow, clock, away=V123, to=V124)
    found = verdict(store, config, "3")
    assert found.level == Level.RISKY
    said = [f for f in found.evidence if f.basis == f"fix {ended.incident_id} {V124}"]
    assert [f.text for f in said] == [
        f"api:v1.2.4 ended {ended.incident_id}: rolling back to api:v1.2.3 takes it away and "
        "may bring that back"
    ]
    assert said[0].level == Level.RISKY
    assert found.headline.startswith("risky: ")
    assert f"api:v1.2.4 ended {ended.incident_id}" in found.headline


def test_rolling_back_to_a_version_after_that_fix_keeps_it(
    store: Store, config: RollbackConfig, workflow: Workflow, clock: Clock
) -> None:
    rolled(workflow, clock, away=V123, to=V124)
    found = verdict(store, config, "4")
    assert found.level == Level.OK
    (finding,) = fixes(found)
    assert finding.text == (
        "no version this rollback takes away ended an earlier incident "
        "(1 succeeded rollback of this target in the bot's history)"
    )


def test_the_running_version_that_ended_an_incident_is_taken_away_too(
    store: Store, config: RollbackConfig, workflow: Workflow, clock: Clock
) -> None:
    ended = rolled(workflow, clock, away=V123, to=V125)
    (finding,) = fixes(verdict(store, config, "4"))
    assert finding.level == Level.RISKY and finding.text.startswith(
        f"api:v1.2.5 ended {ended.incident_id}: rolling back to api:v1.2.4"
    )


def test_a_point_marked_bad_is_risky_until_an_approver_clears_it(
    store: Store, config: RollbackConfig, workflow: Workflow, clock: Clock
) -> None:
    ended = rolled(workflow, clock, away=V123, to=V124)  # v1.2.3 is marked bad
    found = verdict(store, config, "3")
    texts = [f.text for f in found.evidence if f.level == Level.RISKY]
    assert (
        f"api:v1.2.3 was rolled back from in {ended.incident_id} and not cleared: rolling back "
        f"to it may bring {ended.incident_id} back"
    ) in texts
    book = VersionBook(store)
    book.clear(
        [m for m in book.marks(environment="prod", target="app") if m.bad], by=BOB, reason="ok"
    )
    after = verdict(store, config, "3")
    assert not [f for f in after.evidence if "not cleared" in f.text]
    assert after.hashed != found.hashed  # an approval was for the plan with the mark


def test_failed_rollbacks_and_drills_end_no_incident(
    store: Store, config: RollbackConfig, workflow: Workflow, clock: Clock
) -> None:
    rolled(workflow, clock, away=V123, to=V124, ok=False)
    rolled(workflow, clock, away=V125, to=V124, kind=RunKind.DRILL)
    found = verdict(store, config, "3")
    assert not [f for f in found.evidence if " ended " in f.text]


def test_a_target_without_history_gets_no_such_finding(
    store: Store, config: RollbackConfig
) -> None:
    assert fixes(verdict(store, config, "3")) == []


@pytest.mark.parametrize(
    ("target", "ref", "said"),
    [
        (Listed(unreadable=True), "3", "the target's versions could not be read"),
        (Listed(current=None), "3", "the running version is not among the target's versions"),
        (Listed(), "9", "the point 9 is not among the target's versions"),
    ],
)
def test_what_cannot_be_placed_is_said_unknown(
    store: Store,
    config: RollbackConfig,
    workflow: Workflow,
    clock: Clock,
    target: Listed,
    ref: str,
    said: str,
) -> None:
    rolled(workflow, clock, away=V123, to=V124)
    found = verdict(store, config, ref, target)
    unknown = [f for f in found.evidence if "unknown" in f.text]
    assert [f.text for f in unknown] == [
        f"whether this rollback takes away another incident's fix is unknown: {said}"
        + (" (the API server does not answer)" if target.unreadable else "")
    ]
