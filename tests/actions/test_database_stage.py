"""A database restore is proven before anything live is touched: the restore into
`<db>_recovery` and the verification there are the plan's `stage`, run before maintenance mode
goes on; a dump that cannot be restored whole stops the run there, maintenance never on, the
live database as it was. Run by the real runner against the real PostgreSQL, with the
maintenance endpoint on a local HTTP server (the sandbox's WebStub)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actions.base import PlanningError
from actions.database import inspect_archive
from bot.config import RollbackConfig
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.models import Run
from bot.persistence.store import Store, make_engine, upgrade
from handlers import blocks
from sandbox.web import Reply, WebStub
from tests.fakes.config import config_dict
from tests.fakes.crash import CrashCase, approved_run
from tests.fakes.pg import HOST, PORT, RESTORE_ONLY_FLIPS, USER, damaged, dump, exists, pg, scalar
from tests.fakes.runs import a_run, texts

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def stub() -> Iterator[WebStub]:
    """One HTTP server for the module; each test routes paths under a prefix of its own."""
    with WebStub() as server:
        yield server


class Site:
    """One test's maintenance and health endpoints on the shared server."""

    def __init__(self, stub: WebStub) -> None:
        self.stub = stub
        self.prefix = f"/{uuid.uuid4().hex[:8]}"
        self.url = stub.url + self.prefix
        stub.route("POST", f"{self.prefix}/maintenance", Reply(200, json={"ok": True}))
        stub.route("GET", f"{self.prefix}/health", Reply(200, body=b"ok"))

    def toggles(self) -> list[bool]:
        """The maintenance states asked for, in order."""
        calls = self.stub.calls("POST", f"{self.prefix}/maintenance")
        return [bool(r.json()["enabled"]) for r in calls]


@pytest.fixture
def site(stub: WebStub) -> Site:
    return Site(stub)


def case(site: Site, db: str, backups: Path, point: str) -> CrashCase:
    """The rollback of database `db` to `point` in an environment with maintenance mode."""
    raw = config_dict(
        maintenance={"url": f"{site.url}/maintenance"}, health_url=f"{site.url}/health"
    )
    raw["environments"]["prod"]["targets"] = {
        "app": {
            "kind": "database",
            "connection": {"host": HOST, "port": PORT, "user": USER, "dbname": db},
            "backups": str(backups),
            "restore_jobs": 1,
            "restore_timeout": 60.0,
            "swap_timeout": 20.0,
        }
    }
    return CrashCase(config=raw, point=point)


def approve(tmp_path: Path, rollback: CrashCase) -> str:
    """Request and approve the rollback in a new store; return the run's id."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    return approved_run(Store(engine), rollback).id


def run_pending(tmp_path: Path, rollback: CrashCase, run_id: str) -> tuple[Store, Run]:
    """Run the approved rollback with the real runner; return the store and the finished run."""
    store = Store(make_engine(f"sqlite:///{tmp_path / 'bot.db'}"))
    config: RollbackConfig = rollback.parsed()
    Runner(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=rollback.planner(),
        progress=NullProgress(),
        sleep=lambda s: None,
    ).run_pending()
    final = store.runs.get(run_id)
    assert final is not None
    return store, final


def live_untouched(db: str, backups: Path, good: Path) -> None:
    """The live database has its 20,000 rows, is open, and nothing was set aside or dumped."""
    assert scalar(db, "SELECT count(*) FROM users") == 20000
    assert scalar("postgres", f"SELECT datallowconn FROM pg_database WHERE datname = '{db}'")
    with pg() as conn:
        aside = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (f"{db}_pre_rollback_",),
        ).fetchall()
    assert aside == []
    assert [p.name for p in backups.glob("pre_rollback_*")] == []
    assert good.exists()


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


def test_only_the_swap_runs_in_maintenance_between_the_staged_restore_and_the_kept_dump(
    site: Site, voxflow_db: str, backups: Path
) -> None:
    good = dump(voxflow_db, backups, datetime.now(UTC) - timedelta(hours=1))
    rollback = case(site, voxflow_db, backups, f"backup:{good}")
    env = rollback.parsed().environment("prod")

    plan = Planner().build(env_name="prod", env=env, target="app", point=rollback.point)

    assert [(s.phase, s.action.name) for s in plan.steps] == [
        ("stage", "database.restore_into_recovery"),
        ("stage", "database.verify"),
        ("maintenance", "http.maintenance_on"),
        ("rollback", "database.swap"),
        ("verify", "database.verify"),
        ("health", "http.health"),
        ("maintenance", "http.maintenance_off"),
        ("keep", "database.pre_rollback_backup"),
    ]
    assert f"{voxflow_db}_recovery" in plan.steps[1].action.describe()


def test_the_approval_message_says_the_staged_steps_run_before_maintenance_and_the_dump_after(
    site: Site, voxflow_db: str, backups: Path
) -> None:
    good = dump(voxflow_db, backups, datetime.now(UTC) - timedelta(hours=1))
    rollback = case(site, voxflow_db, backups, f"backup:{good}")
    env = rollback.parsed().environment("prod")
    plan = Planner().build(env_name="prod", env=env, target="app", point=rollback.point)
    run = a_run(0)
    run.plan = plan.as_json()

    shown = "\n".join(texts(blocks.plan_message(run, blocks.RunFacts([]), approvers=env.approvers)))

    assert (
        f"1. Restore {good.name} into a new database ({voxflow_db}_recovery) · "
        "_before maintenance, nothing live touched_"
    ) in shown
    assert "3. Maintenance mode on · _maintenance_" in shown
    assert "4. Swap in the restored database · _rollback_" in shown
    assert "8. Back up the replaced database · _after maintenance, the site up_" in shown


@pytest.mark.parametrize("how", RESTORE_ONLY_FLIPS)
def test_a_dump_that_reads_back_but_does_not_restore_fails_before_maintenance_goes_on(
    site: Site, big_db: str, backups: Path, tmp_path: Path, how: str
) -> None:
    good = dump(big_db, backups, datetime.now(UTC) - timedelta(hours=1))
    bad = damaged(good, how)
    assert inspect_archive(bad).readable  # the plan-time read-back lets it through

    rollback = case(site, big_db, backups, f"backup:{bad}")
    store, final = run_pending(tmp_path, rollback, approve(tmp_path, rollback))

    records = {r.name: r for r in store.steps.of(final.id)}
    restore = records["database.restore_into_recovery"]
    assert final.state == "failed"
    assert restore.state == "failed"
    assert "pg_restore" in restore.summary and f"{big_db} was not touched" in restore.summary
    assert "error" in final.outcome and "not rolled back" in final.outcome
    assert set(records) == {"database.restore_into_recovery", "http.maintenance_off"}
    assert records["http.maintenance_off"].state == "not run"
    assert "Maintenance mode on never ran" in records["http.maintenance_off"].summary
    assert site.toggles() == []  # neither on nor off: someone else's maintenance is left alone
    live_untouched(big_db, backups, good)


@pytest.mark.parametrize(
    "how",
    ["truncated_99", "truncated_90", "truncated_50", "truncated_10", "flipped_50", "flipped_90"],
)
def test_a_truncated_or_corrupt_dump_is_refused_at_request_and_at_run_time(
    site: Site, big_db: str, backups: Path, tmp_path: Path, how: str
) -> None:
    good = dump(big_db, backups, datetime.now(UTC) - timedelta(hours=1))
    bad = damaged(good, how)
    asked = case(site, big_db, backups, f"backup:{bad}")
    env = asked.parsed().environment("prod")
    with pytest.raises(PlanningError, match="cannot be used"):
        Planner().build(env_name="prod", env=env, target="app", point=asked.point)

    approved = case(site, big_db, backups, f"backup:{good}")
    run_id = approve(tmp_path, approved)
    good.write_bytes(bad.read_bytes())  # damaged after approval: the run's plan check sees it
    store, final = run_pending(tmp_path, approved, run_id)

    assert final.state == "failed"
    assert "the plan can no longer be built" in final.outcome
    assert "cannot be used" in final.outcome
    assert store.steps.of(final.id) == []
    assert site.toggles() == []
    assert scalar(big_db, "SELECT count(*) FROM users") == 20000
    assert not exists(f"{big_db}_recovery")
