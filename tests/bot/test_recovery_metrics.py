"""/metrics: recovery phases per environment and target, and each target's drill time."""

from __future__ import annotations

from bot.execution.progress import NullProgress
from bot.persistence.models import Run
from bot.persistence.store import Store
from bot.serving.metrics import BotMetrics, MeteredProgress
from tests.fakes.config import ALICE, Clock
from tests.fakes.rows import set_drill_fields
from tests.fakes.runners import incident_with_history


def test_a_finished_run_observes_its_incident_phases_by_environment_and_target(
    store: Store, clock: Clock
) -> None:
    incident = incident_with_history(store, clock)
    metrics = BotMetrics()
    progress = MeteredProgress(NullProgress(), metrics, store)
    run = Run(id="r1", incident_id=incident.id, environment="prod", target="app", state="failed")
    progress.run_finished(run)
    sample = metrics.registry.get_sample_value
    for phase, seconds in (("detect", 120), ("decide", 30), ("approve", 45), ("recover", 75)):
        labels = {"phase": phase, "environment": "prod", "target": "app"}
        assert sample("rollback_recovery_phase_seconds_count", labels) == 1
        assert sample("rollback_recovery_phase_seconds_sum", labels) == seconds


def test_a_drill_sets_its_targets_time_to_recover_and_is_not_an_incident(
    store: Store, clock: Clock
) -> None:
    incident = store.incidents.create(
        environment="staging", target="app", severity="low", source="drill", opened_by=ALICE
    )
    store.runs.create(
        locks=[],
        actor=ALICE,
        incident_id=incident.id,
        environment="staging",
        target="app",
        point="2",
        plan=[],
        plan_hash="h",
        requester=ALICE,
        expires_at=clock.now,
    )
    (run,) = store.runs.find()
    store.drills.add(
        run_id=run.id,
        incident_id=incident.id,
        environment="staging",
        target="app",
        requester=ALICE,
        state="succeeded",
    )
    set_drill_fields(store, run.id, recover_seconds=72.0)
    metrics = BotMetrics()
    MeteredProgress(NullProgress(), metrics, store).run_finished(run)
    sample = metrics.registry.get_sample_value
    assert (
        sample("rollback_drill_recover_seconds", {"environment": "staging", "target": "app"}) == 72
    )
    labels = {"phase": "detect", "environment": "staging", "target": "app"}
    assert sample("rollback_recovery_phase_seconds_count", labels) is None
