"""The regression guard (issue 31, point 2): a version rolled away from stays bad for its
target, with its incident, until an approver clears it with a reason.

On SQLite and PostgreSQL, with the history written as the runner writes it (a rollback's end).
"""

from __future__ import annotations

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bot.application.guard import Guard
from bot.config import RollbackConfig, UnknownTarget
from bot.domain.versions import MalformedVersion, Verdict, VersionNote, names_version, well_formed
from bot.execution.workflow import Refused, Workflow
from bot.persistence.models import Base
from bot.persistence.store import Store, downgrade, make_engine, upgrade
from bot.persistence.versions import CLEARED, VersionBook
from tests.fakes.config import ALICE, BOB, Clock
from tests.fakes.history import rolled

V124, V125, V126 = (f"registry.example/voxflow/api:v1.2.{n}" for n in (4, 5, 6))


@pytest.fixture
def guard(config: RollbackConfig, workflow: Workflow) -> Guard:
    return Guard(config=config, workflow=workflow)


def test_migration_0012_matches_the_models_and_downgrades(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "target_versions" in str(d)] == []
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO target_versions (environment, target, version, state, label, at, "
                "cleared_by, cleared_at, cleared_reason) VALUES ('prod', 'app', 'v1', "
                "'rolled away', 'v1', '2026-12-01 00:00:00', 'U1', '2026-12-02 00:00:00', 'ok')"
            )
        )
    downgrade(engine, "0011")
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("target_versions")}
    assert not columns & {"cleared_by", "cleared_at", "cleared_reason"}
    with engine.connect() as connection:  # the mark is kept, bad again without its clearing
        rows = connection.execute(sqlalchemy.text("SELECT state FROM target_versions")).all()
    assert [r[0] for r in rows] == ["rolled away"]
    upgrade(engine)
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("target_versions")}
    assert {"cleared_by", "cleared_at", "cleared_reason"} <= columns
    with pytest.raises(sqlalchemy.exc.IntegrityError), engine.begin() as connection:
        connection.execute(  # the state's constraint survived both copies of the table
            sqlalchemy.text("UPDATE target_versions SET state = 'fine'")
        )
    engine.dispose()


def test_a_version_rolled_away_from_is_bad_with_its_incident(
    guard: Guard, workflow: Workflow, clock: Clock
) -> None:
    run = rolled(workflow, clock, away=V125, to=V124)
    answer = guard.ask(environment="prod", target="app", version=V125)
    assert answer.verdict == Verdict.BAD and answer.mark is not None
    body = answer.as_json()
    assert body["incident"] == run.incident_id and body["deploy"] is False
    assert body["reason"] == f"rolled back from in {run.incident_id}; not cleared"
    assert body["since"] == "2026-11-24T03:05:00Z" and body["cleared_by"] is None
    # named by its tag too; the version rolled back to is ok; a new one is unknown
    assert guard.ask(environment="prod", target="app", version="v1.2.5").verdict == Verdict.BAD
    ok = guard.ask(environment="prod", target="app", version="v1.2.4")
    assert ok.verdict == Verdict.OK and ok.as_json()["reason"].startswith("verified healthy")
    new = guard.ask(environment="prod", target="app", version=V126).as_json()
    assert new["verdict"] == "unknown" and new["deploy"] is True and new["incident"] is None


def test_an_approver_clears_a_bad_version_with_who_when_and_why(
    guard: Guard, workflow: Workflow, store: Store, clock: Clock
) -> None:
    run = rolled(workflow, clock, away=V125, to=V124)
    assert V125 in store.versions.known(environment="prod", target="app").rolled_away
    (cleared,) = guard.clear(
        environment="prod", target="app", version="v1.2.5", reason="  fixed in\nv1.2.6 ", user=BOB
    )
    assert (cleared.cleared_by, cleared.cleared_reason) == (BOB, "fixed in v1.2.6")
    answer = guard.ask(environment="prod", target="app", version=V125).as_json()
    assert answer["verdict"] == "ok" and answer["deploy"] is True
    assert answer["cleared_by"] == BOB and answer["cleared_at"] == "2026-11-24T04:05:00Z"
    assert answer["reason"] == f"rolled back from in {run.incident_id}; cleared: fixed in v1.2.6"
    assert answer["incident"] == run.incident_id  # the record of why it was bad stays
    # the form may default to it again
    assert store.versions.known(environment="prod", target="app").rolled_away == {}
    (event,) = [e for e in store.events.of(run.incident_id) if e.kind == CLEARED]
    assert event.actor == BOB and event.detail["reason"] == "fixed in v1.2.6"
    assert event.detail["version"] == V125


def test_a_cleared_version_rolled_away_from_again_is_bad_again(
    guard: Guard, workflow: Workflow, clock: Clock
) -> None:
    rolled(workflow, clock, away=V125, to=V124)
    guard.clear(environment="prod", target="app", version=V125, reason="fixed", user=BOB)
    rolled(workflow, clock, away=V124, to=V125)  # healthy again: it went back to it
    again = rolled(workflow, clock, away=V125, to=V124)
    answer = guard.ask(environment="prod", target="app", version=V125).as_json()
    assert answer["verdict"] == "bad" and answer["incident"] == again.incident_id
    assert answer["cleared_by"] is None and answer["cleared_reason"] is None


def test_monitoring_seeing_a_bad_version_healthy_does_not_clear_it(
    guard: Guard, workflow: Workflow, store: Store, clock: Clock
) -> None:
    rolled(workflow, clock, away=V125, to=V124)
    store.versions.remember(VersionNote("prod", "app", None, healthy=(V125, "v1.2.5")))
    assert guard.ask(environment="prod", target="app", version=V125).verdict == Verdict.BAD
    assert V125 in store.versions.known(environment="prod", target="app").rolled_away


def test_only_an_approver_clears_and_a_refusal_changes_nothing(
    guard: Guard, workflow: Workflow, store: Store, clock: Clock
) -> None:
    run = rolled(workflow, clock, away=V125, to=V124)
    with pytest.raises(Refused, match="only an approver of prod clears"):
        guard.clear(environment="prod", target="app", version=V125, reason="fine", user=ALICE)
    # an approver through a configured group may
    guard.clear(
        environment="prod",
        target="app",
        version=V125,
        reason="fine",
        user=ALICE,
        user_groups=frozenset({"SDBAS00001"}),
    )
    assert [e.actor for e in store.events.of(run.incident_id) if e.kind == CLEARED] == [ALICE]


@pytest.mark.parametrize(
    ("environment", "target", "version", "reason", "said"),
    [
        ("qa", "app", "v1.2.5", "fixed", "unknown environment 'qa' (known: prod)"),
        ("prod", "api", "v1.2.5", "fixed", "unknown target 'api' in prod"),
        ("prod", "full", "v1.2.5", "fixed", "full in prod is a group of targets (db, app)"),
        ("prod", "app", "v1.2.5;rm", "fixed", "'v1.2.5;rm' is not a version"),
        ("prod", "app", "", "fixed", "no version given"),
        ("prod", "app", "v1.2.5", " \n", "say why it is safe again"),
        ("prod", "app", "v1.2.5", "x" * 501, "the reason is at most 500 characters"),
        ("prod", "app", "v1.2.4", "fixed", "is not marked bad: it was verified healthy"),
        ("prod", "app", "v1.2.9", "fixed", "is not marked bad: no rollback moved away from it"),
    ],
)
def test_bad_input_to_clear_is_refused_and_changes_nothing(
    guard: Guard,
    workflow: Workflow,
    store: Store,
    clock: Clock,
    environment: str,
    target: str,
    version: str,
    reason: str,
    said: str,
) -> None:
    run = rolled(workflow, clock, away=V125, to=V124)
    before = VersionBook(store).marks(environment="prod", target="app")
    with pytest.raises(Refused, match=said.replace("(", r"\(").replace(")", r"\)")):
        guard.clear(
            environment=environment, target=target, version=version, reason=reason, user=BOB
        )
    assert VersionBook(store).marks(environment="prod", target="app") == before
    assert not [e for e in store.events.of(run.incident_id) if e.kind == CLEARED]


def test_clearing_twice_says_who_cleared_it_first(
    guard: Guard, workflow: Workflow, clock: Clock
) -> None:
    rolled(workflow, clock, away=V125, to=V124)
    guard.clear(environment="prod", target="app", version=V125, reason="fixed", user=BOB)
    with pytest.raises(Refused, match=f"not marked bad: {BOB} cleared it \\(fixed\\)"):
        guard.clear(environment="prod", target="app", version=V125, reason="again", user=BOB)


def test_asking_about_an_unknown_target_or_a_malformed_version_raises(guard: Guard) -> None:
    with pytest.raises(UnknownTarget, match="unknown target 'api' in prod"):
        guard.ask(environment="prod", target="api", version="v1")
    with pytest.raises(MalformedVersion, match="at most 1000 characters"):
        guard.ask(environment="prod", target="app", version="v" * 1001)


def test_a_version_is_named_by_its_key_an_image_a_tag_or_a_digest() -> None:
    key = "registry.example:5000/voxflow/api:v1.2.5, registry.example:5000/side@sha256:ab12"
    for asked in (
        key,
        "registry.example:5000/voxflow/api:v1.2.5,registry.example:5000/side@sha256:ab12",
        "registry.example:5000/voxflow/api:v1.2.5",
        "v1.2.5",
        "sha256:ab12",
    ):
        assert names_version(well_formed(asked), key), asked
    for other in ("v1.2.6", "5000/voxflow/api:v1.2.5", "registry.example:5000/side", "api"):
        assert not names_version(well_formed(other), key), other
    # a registry's port is not a tag
    assert not names_version("5000", "registry.example:5000/voxflow/api")
