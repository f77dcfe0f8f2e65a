"""The timed re-check after a successful Kubernetes rollback, on SQLite and PostgreSQL.

A real runner rolls voxflow-api back on the stand-in cluster, whose Argo CD plays
self-heal (it puts Git's template, the bad version, back while its sync is on). The
re-check is due `recheck_after` after the success on the store's clock, which the tests
move by hand; several `Rechecks` on the same database stand for several bot processes.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from actions.kubernetes.gitops import resume_sync
from bot.domain.decision import Answers, Severity
from bot.execution.planner import Planner
from bot.execution.recheck import Rechecks
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine
from tests.fakes.config import ALICE, Clock
from tests.fakes.gitops import API, IMAGES, World, argocd, image, kube_config
from tests.fakes.waiting import wait_for

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.gitops"]


def test_a_recheck_is_scheduled_when_the_rollback_succeeds_and_waits_for_its_time(
    rolled_back: World, clock: Clock
) -> None:
    (recheck,) = rolled_back.store.rechecks.of(rolled_back.run.id)
    assert recheck.step == "kubernetes.rollout_undo" and recheck.state == "pending"
    assert (recheck.due_at - clock.now).total_seconds() == 600
    clock.advance(minutes=9)
    assert rolled_back.process().run_due() == 0
    assert rolled_back.store.rechecks.of(rolled_back.run.id)[0].state == "pending"


def test_argocd_putting_the_bad_version_back_raises_an_alert_once(
    rolled_back: World, kube: KubeCluster, clock: Clock
) -> None:
    # Someone resumes Argo CD before reverting Git: self-heal redeploys v3.
    resume_sync(kube.api, "argocd", namespace="argocd", name="voxflow", memory={})
    wait_for(lambda: image(kube) == IMAGES[2], what="Argo CD self-heal to put v3 back")
    clock.advance(minutes=10)
    first, second = rolled_back.process(), rolled_back.process()
    assert first.run_due() == 1
    assert second.run_due() == 0
    (alert,) = rolled_back.messages("recheck.drift", "recheck.steady")
    assert alert.kind == "recheck.drift"
    assert alert.detail["restored"] == [IMAGES[1]] and alert.detail["live"] == [IMAGES[2]]
    assert f"image {IMAGES[1]} → {IMAGES[2]}" in alert.detail["outcome"]
    (recheck,) = rolled_back.store.rechecks.of(rolled_back.run.id)
    assert recheck.state == "done" and recheck.changed is True
    events = [e for e in rolled_back.store.events.of(rolled_back.run.incident_id)]
    assert [e.kind for e in events].count("recheck.done") == 1


def test_processes_checking_at_the_same_moment_report_once(
    rolled_back: World, clock: Clock
) -> None:
    clock.advance(minutes=10)
    processes = [rolled_back.process() for _ in range(4)]
    start = threading.Barrier(len(processes))
    settled: list[int] = []

    def check(process: Rechecks) -> None:
        start.wait()
        settled.append(process.run_due())

    threads = [threading.Thread(target=check, args=(p,)) for p in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(settled) == [0, 0, 0, 1]
    assert len(rolled_back.messages("recheck.drift", "recheck.steady")) == 1


def test_an_untouched_rollback_gets_a_quiet_still_on_line(
    rolled_back: World, kube: KubeCluster, clock: Clock
) -> None:
    kube.fake.gitops.sync_all()  # Argo CD is suspended: nothing put back
    clock.advance(minutes=10)
    assert rolled_back.process().run_due() == 1
    (line,) = rolled_back.messages("recheck.drift", "recheck.steady")
    assert line.kind == "recheck.steady"
    assert line.detail["outcome"] == f"deployment/{API} still runs {IMAGES[1]}"
    assert rolled_back.store.rechecks.of(rolled_back.run.id)[0].changed is False


def test_after_a_restart_and_a_process_dying_mid_check_it_is_still_checked_once(
    rolled_back: World, database_url: str, clock: Clock
) -> None:
    # The bot restarts between the success and the due time: a new engine, new processes.
    engine = make_engine(database_url)
    try:
        restarted = Store(engine, clock=clock)
        clock.advance(minutes=11)
        dying = restarted.rechecks.claim_next(owner="dies-mid-check", seconds=120)
        assert dying is not None  # claimed, then the process is killed before it reports
        survivor = rolled_back.process(restarted)
        assert survivor.run_due() == 0  # its claim still holds
        clock.advance(minutes=3)
        assert survivor.run_due() == 1
        assert not restarted.rechecks.settle(dying, state="done", outcome="late")  # fenced
        assert len(rolled_back.messages("recheck.drift", "recheck.steady")) == 1
        (recheck,) = restarted.rechecks.of(rolled_back.run.id)
        assert recheck.state == "done" and recheck.attempts == 2
    finally:
        engine.dispose()


def test_recheck_after_zero_schedules_nothing(kube: KubeCluster, store: Store) -> None:
    argocd(kube)
    config = kube_config(kube, recheck_after=0)
    planner = Planner()
    plan = planner.build(env_name="prod", env=config.environment("prod"), target="app", point=None)
    _, run = Workflow(store=store, config=config).request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    rechecks = Rechecks(store=store, config=config, planner=planner)
    assert rechecks.schedule(run) == 0
    assert store.rechecks.of(run.id) == []


def test_a_recheck_of_a_run_that_did_not_succeed_is_dropped(
    kube: KubeCluster, store: Store, clock: Clock
) -> None:
    argocd(kube)
    config = kube_config(kube, recheck_after="1m")
    planner = Planner()
    plan = planner.build(env_name="prod", env=config.environment("prod"), target="app", point=None)
    _, run = Workflow(store=store, config=config).request(
        plan=plan, requester=ALICE, severity=Severity.HIGH, answers=Answers(functional=False)
    )
    rechecks = Rechecks(store=store, config=config, planner=planner)
    assert rechecks.schedule(run) == 1
    assert rechecks.schedule(run) == 0  # scheduled once per undo step
    clock.advance(minutes=2)
    assert rechecks.run_due() == 1
    (recheck,) = store.rechecks.of(run.id)
    assert recheck.state == "dropped" and "requested, not succeeded" in recheck.outcome
    assert [m.kind for m in store.outbox.messages(run.id)] == []


def test_migration_0009_matches_the_models_and_downgrades(empty_database_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    from bot.persistence.models import Base
    from bot.persistence.store import _alembic_config

    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "head")
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        ours = [d for d in diff if "rechecks" in str(d) or "sync_resumes" in str(d)]
        assert ours == []
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "0006")
        tables = set(inspect(engine).get_table_names())
        assert not tables & {"rechecks", "sync_resumes"} and "runs" in tables
    finally:
        engine.dispose()
