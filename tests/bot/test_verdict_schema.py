"""Schema compatibility of an app rollback: stand-in cluster, real registry, real PostgreSQL.

The app's revisions are an hour apart (the stand-in's history), its images are
in Debian's docker-registry, and its database is a real PostgreSQL database
whose `schema_migrations` records when each migration was applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.base import Level
from bot.config import Environment, parse_config
from bot.domain.verdict import FULL_ROLLBACK, Verdict
from bot.execution.planner import Planner, target_factory
from tests.fakes.docker_apps import app, push
from tests.fakes.docker_apps import params as docker_params
from tests.fakes.pg import connection, execute

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.kube", "tests.fakes.dockerd", "tests.fakes.pg"]
pytestmark = pytest.mark.postgres

NS, API = "voxflow-prod", "voxflow-api"
TIMED = """
ALTER TABLE schema_migrations ADD COLUMN applied_at timestamptz;
UPDATE schema_migrations SET applied_at = now() - interval '2 days';
INSERT INTO schema_migrations VALUES ('002', now() - interval '30 minutes');
"""


@pytest.fixture
def images(dockerd: Engine, registry: Registry) -> list[str]:
    """Two releases of the app in the registry (pushed once per test)."""
    push(dockerd, registry, "v51")
    push(dockerd, registry, "v52")
    return [f"{registry.address}/rbt-app:v51", f"{registry.address}/rbt-app:v52"]


def world(
    kube: KubeCluster,
    db: str,
    tmp_path: Path,
    images: list[str],
    *,
    forward: str,
    down: bool = True,
    **app: Any,
) -> tuple[Planner, Any]:
    """The app (revision 1 deployed an hour ago) and its database with migration 002."""
    kube.fake.add_deployment(NS, API, images=images)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_init.sql").write_text("CREATE TABLE users (id serial PRIMARY KEY);")
    (migrations / "002_change.sql").write_text(forward)
    if down:
        (migrations / "rollback_002.sql").write_text("SELECT 1;")
    (tmp_path / "backups").mkdir()
    conn = connection(db)
    targets: dict[str, Any] = {
        "app": {
            "kind": "kubernetes",
            "namespace": NS,
            "deployment": API,
            "connection": {"kubeconfig": str(kube.kubeconfig), "context": "sandbox"},
            "schema_from": {"database": "db", **app},
        },
        "db": {
            "kind": "database",
            "connection": {"dbname": conn.dbname, "host": conn.host, "port": conn.port},
            "backups": str(tmp_path / "backups"),
            "migrations": str(migrations),
            "methods": ["migration"],
        },
        "full": {"kind": "full", "targets": ["db", "app"]},
    }
    raw = {
        "environments": {
            "prod": {
                "incident_channel": "C0INCIDENT",
                "approvers": {"users": ["UBOB000001"]},
                "targets": targets,
            }
        }
    }
    config = parse_config(raw, path=Path("test.yml"))
    return Planner(factory=target_factory()), config.environment("prod")


def app_verdict(planner: Planner, env: Any, target: str = "app") -> Verdict:
    return next(v for v in planner.verdicts(env, target, None) if v.target == "app")


def test_a_destructive_migration_since_the_target_version_is_risky_and_suggests_full_rollback(
    kube: KubeCluster, voxflow_db: str, tmp_path: Path, images: list[str]
) -> None:
    execute(voxflow_db, TIMED)
    planner, env = world(
        kube, voxflow_db, tmp_path, images, forward="ALTER TABLE agents DROP COLUMN name;"
    )
    verdict = app_verdict(planner, env)
    assert verdict.level == Level.RISKY
    assert verdict.suggestion == FULL_ROLLBACK
    assert verdict.headline == (
        "risky: migration 002 breaks old code (drops a column: ALTER TABLE AGENTS DROP COLUMN "
        f"NAME); down script rollback_002.sql — {FULL_ROLLBACK}"
    )


def test_an_additive_migration_since_the_target_version_is_safe(
    kube: KubeCluster, voxflow_db: str, tmp_path: Path, images: list[str]
) -> None:
    execute(voxflow_db, TIMED)
    forward = (
        "ALTER TABLE agents ADD COLUMN voice text; CREATE INDEX agents_voice ON agents (voice);"
    )
    planner, env = world(kube, voxflow_db, tmp_path, images, forward=forward)
    verdict = app_verdict(planner, env)
    assert verdict.headline == "safe", verdict.evidence
    assert "migration 002 is additive: old code keeps working (down script rollback_002.sql)" in [
        f.text for f in verdict.evidence
    ]


def test_a_breaking_migration_without_down_script_advises_fixing_forward(
    kube: KubeCluster, voxflow_db: str, tmp_path: Path, images: list[str]
) -> None:
    execute(voxflow_db, TIMED)
    planner, env = world(
        kube,
        voxflow_db,
        tmp_path,
        images,
        forward="ALTER TABLE users RENAME COLUMN email TO mail;",
        down=False,
    )
    verdict = app_verdict(planner, env)
    assert verdict.level == Level.RISKY
    assert verdict.suggestion.startswith("the old image would run on a schema it does not know")
    assert "fix forward" in verdict.suggestion


def test_the_full_rollback_rolls_the_database_back_too(
    kube: KubeCluster, voxflow_db: str, tmp_path: Path, images: list[str]
) -> None:
    execute(voxflow_db, TIMED)
    planner, env = world(
        kube, voxflow_db, tmp_path, images, forward="ALTER TABLE agents DROP COLUMN name;"
    )
    verdict = app_verdict(planner, env, target="full")
    assert verdict.headline == "safe", verdict.evidence
    assert "db is rolled back in this plan too (full rollback)" in [
        f.text for f in verdict.evidence
    ]


def test_without_migration_times_the_image_version_maps_to_a_migration(
    kube: KubeCluster, voxflow_db: str, tmp_path: Path, images: list[str]
) -> None:
    execute(voxflow_db, "INSERT INTO schema_migrations VALUES ('002')")  # no times kept
    planner, env = world(
        kube,
        voxflow_db,
        tmp_path,
        images,
        forward="ALTER TABLE agents DROP COLUMN name;",
        versions={"v51": "001"},
    )
    verdict = app_verdict(planner, env)
    assert verdict.level == Level.RISKY and verdict.suggestion == FULL_ROLLBACK


def test_without_times_or_a_mapping_the_schema_is_not_known_and_says_how_to_fix_it(
    kube: KubeCluster, voxflow_db: str, tmp_path: Path, images: list[str]
) -> None:
    execute(voxflow_db, "INSERT INTO schema_migrations VALUES ('002')")
    planner, env = world(kube, voxflow_db, tmp_path, images, forward="SELECT 1;")
    verdict = app_verdict(planner, env)
    assert verdict.level == Level.RISKY
    assert "schema_from.versions" in verdict.headline


def test_a_docker_images_oci_version_label_maps_to_its_migration(
    dockerd: Engine, voxflow_db: str, tmp_path: Path
) -> None:
    """golang-migrate-like untimed bookkeeping: the image's label says which schema it knows."""
    dockerd.build(
        "rbt-app:oci140",
        "FROM rbt-app:v1\nLABEL org.opencontainers.image.version=1.4.0\n",
        {},
    )
    name, _ = app(dockerd, "v2")
    execute(voxflow_db, "INSERT INTO schema_migrations VALUES ('002')")  # no times kept
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "002_change.sql").write_text("ALTER TABLE agents DROP COLUMN name;")
    (migrations / "rollback_002.sql").write_text("SELECT 1;")
    (tmp_path / "backups").mkdir()
    docker = docker_params(dockerd, name).model_dump(exclude_none=True)
    docker["schema_from"] = {"database": "db", "versions": {"1.4.0": "001"}}
    env = Environment.model_validate(
        {
            "incident_channel": "C0INCIDENT",
            "approvers": {"users": ["UBOB000001"]},
            "targets": {
                "app": docker,
                "db": {
                    "kind": "database",
                    "connection": {"dbname": voxflow_db},
                    "backups": str(tmp_path / "backups"),
                    "migrations": str(migrations),
                    "methods": ["migration"],
                },
            },
        }
    )
    (verdict,) = Planner(factory=target_factory()).verdicts(env, "app", "oci140")
    assert verdict.level == Level.RISKY and verdict.suggestion == FULL_ROLLBACK
    assert "migration 002 breaks old code (drops a column" in verdict.headline
