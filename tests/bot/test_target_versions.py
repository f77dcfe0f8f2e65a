"""Each target's last known healthy version and the versions rolled away from (issue 15, point 6).

On SQLite and PostgreSQL: migration 0007 matches the models, a finished run teaches the store
in the same transaction as its end, and the default rollback point follows what it learnt.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from actions.base import RollbackPoint
from bot.domain.plans import default_point, remembered
from bot.domain.versions import KnownVersions, VersionNote, version_key
from bot.execution.workflow import version_note
from bot.persistence.models import Base, Run
from bot.persistence.store import Store
from tests.fakes.config import Clock

V124, V123, V122 = "voxflow/api:v1.2.4", "voxflow/api:v1.2.3", "voxflow/api:v1.2.2"


def _points(current: str = "3") -> list[RollbackPoint]:
    images = {"3": V124, "2": V123, "1": V122}
    return [
        RollbackPoint(
            ref=ref, label=f"rev {ref} · {image}", is_current=ref == current, version=image
        )
        for ref, image in images.items()
    ]


def test_migration_0007_matches_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "target_versions" in str(d)] == []


def test_a_finished_rollback_remembers_healthy_and_rolled_away_versions(
    store: Store, clock: Clock
) -> None:
    store.versions.remember(
        VersionNote("prod", "app", "INC-1", healthy=(V123, "rev 2"), rolled_away=(V124, "rev 3"))
    )
    clock.advance(minutes=5)
    store.versions.remember(VersionNote("staging", "app", "INC-2", healthy=(V122, "rev 1")))
    known = store.versions.known(environment="prod", target="app")
    assert known.healthy == V123 and known.healthy_incident == "INC-1"
    assert known.rolled_away == {V124: "INC-1"}
    # a version later verified healthy is no longer avoided; the newest healthy one counts
    store.versions.remember(VersionNote("prod", "app", "INC-3", healthy=(V124, "rev 5")))
    known = store.versions.known(environment="prod", target="app")
    assert known.healthy == V124 and known.rolled_away == {}


def test_a_version_longer_than_the_column_is_kept_by_a_digest(store: Store) -> None:
    images = ", ".join(f"registry.example/team/image-{n}:v1.2.{n}" for n in range(20))
    store.versions.remember(VersionNote("prod", "app", "INC-1", rolled_away=(images, "rev 9")))
    known = store.versions.known(environment="prod", target="app")
    assert known.rolled_away == {version_key(images): "INC-1"}
    assert len(version_key(images)) <= 255 and version_key(images) != version_key(images + "x")
    point = RollbackPoint(ref="9", label="rev 9", version=images)
    assert remembered([point], known)[0].avoid == "rolled back from in INC-1"


def test_the_default_is_the_last_known_healthy_version_and_never_one_rolled_away_from() -> None:
    known = KnownVersions(healthy=V122, rolled_away={V123: "INC-1"})
    points = remembered(_points(), known)
    assert points[1].label == "rolled back from in INC-1 · rev 2 · voxflow/api:v1.2.3"
    assert points[1].avoid and not points[2].avoid
    assert default_point(points, healthy=[V122]) == points[2]  # rev 1, not the previous rev 2
    # without a healthy version known, the previous one that was not rolled away from
    assert default_point(points) == points[2]
    assert default_point(_points()) == _points()[1]
    # production runs the last known healthy version: no default, a person chooses
    assert default_point(_points(current="2"), healthy=[V123]) is None


def test_the_run_end_teaches_healthy_only_on_success_and_rolled_away_always() -> None:
    run = Run(environment="prod", target="app", incident_id="INC-7")
    run.from_version, run.to_version, run.from_key, run.to_key = "rev 3", "rev 2", V124, V123
    ok = version_note(run, ok=True)
    failed = version_note(run, ok=False)
    assert ok is not None and failed is not None
    assert ok.healthy == (V123, "rev 2") and ok.rolled_away == (V124, "rev 3")
    assert failed.healthy is None and failed.rolled_away == (V124, "rev 3")
    run.from_version, run.to_version = "previous", "previous"  # a full-system rollback
    run.from_key = run.to_key = None
    assert version_note(run, ok=True) is None
