"""A database-only rollback stops the environment's Kubernetes workers first and starts them
after, as the procedures' pre-rollback checklist says
(bot.execution.planner.Planner._database_workers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actions.database import DatabaseParams
from actions.kubernetes import KubernetesParams
from bot.config import Environment
from bot.execution.planner import Planner
from tests.fakes.pg import connection, dump, execute, run_step, scalar

if TYPE_CHECKING:
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.pg", "tests.fakes.kube"]
pytestmark = pytest.mark.postgres

NS = "voxflow-prod"


def environment(db: str, backups: Path, kube: KubeCluster, *, with_app: bool) -> Environment:
    """An environment with the database and (optionally) a Kubernetes app with workers."""
    targets: dict[str, Any] = {
        "db": DatabaseParams(
            kind="database", connection=connection(db), backups=str(backups), swap_timeout=20.0
        )
    }
    if with_app:
        targets["api"] = KubernetesParams(
            kind="kubernetes",
            namespace=NS,
            deployment="voxflow-api",
            workers=["voxflow-worker"],
            connection=kube.connection,
        )
    return Environment(
        incident_channel="C0123456789", approvers={"users": ["U0123456789"]}, targets=targets
    )


def replicas(kube: KubeCluster, name: str) -> int:
    """Return a Deployment's desired replica count."""
    return int(kube.apps.read_namespaced_deployment(name, NS).spec.replicas)


def test_a_database_rollback_stops_the_workers_before_the_swap_and_starts_them_last(
    voxflow_db: str, tmp_path: Path, kube: KubeCluster
) -> None:
    kube.fake.add_deployment(NS, "voxflow-api", images=["voxflow/api:v1"], replicas=2)
    kube.fake.add_deployment(NS, "voxflow-worker", images=["voxflow/worker:v1"], replicas=3)
    taken = datetime.now(UTC) - timedelta(hours=1)
    path = dump(voxflow_db, tmp_path, taken)
    execute(voxflow_db, "INSERT INTO users (email) VALUES ('late@example.com')")
    env = environment(voxflow_db, tmp_path, kube, with_app=True)

    plan = Planner().build(env_name="prod", env=env, target="db", point=f"backup:{path}")
    names = [(s.phase, s.action.name, s.always) for s in plan.steps]
    memory: dict[str, Any] = {}
    seen: list[int] = []
    for step in plan.steps:
        run_step(step.action, memory)
        seen.append(replicas(kube, "voxflow-worker"))

    stop = names.index(("prepare", "kubernetes.stop_workers", False))
    swap = names.index(("rollback", "database.swap", False))
    assert [p for p, _, _ in names[:stop]] == ["stage", "stage"]
    assert names[-2:] == [
        ("resume", "kubernetes.start_workers", True),
        ("keep", "database.pre_rollback_backup", False),  # the dump of what was set aside
    ]
    assert [n for _, n, _ in names].count("kubernetes.stop_workers") == 1
    assert seen[:stop] == [3, 3]  # the stage touches nothing live: the workers keep running
    assert seen[swap] == 0 and seen[-3] == 0 and seen[-2] == 3
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3


def test_without_kubernetes_workers_the_database_plan_is_unchanged(
    voxflow_db: str, tmp_path: Path, kube: KubeCluster
) -> None:
    path = dump(voxflow_db, tmp_path, datetime.now(UTC) - timedelta(hours=1))
    env = environment(voxflow_db, tmp_path, kube, with_app=False)

    plan = Planner().build(env_name="prod", env=env, target="db", point=f"backup:{path}")

    assert "kubernetes.stop_workers" not in [s.action.name for s in plan.steps]
