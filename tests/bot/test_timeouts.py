"""Every step's timeout is configurable per target and per environment, by step kind, and the
approved plan's timeouts hold on resume (issue 15, point 4)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import duration, parse_config
from bot.config_file import ConfigError
from bot.execution.planner import Planner
from sandbox.kubernetes import FakeKubernetes
from tests.fakes.config import config_dict

NAMESPACE, APP = "voxflow-prod", "voxflow-api"


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    kube = FakeKubernetes(ready_delay=0.05).start()
    try:
        kube.add_deployment(
            NAMESPACE, APP, images=["voxflow/api:v1.2.3", "voxflow/api:v1.2.4"], replicas=1
        )
        yield kube.write_kubeconfig(tmp_path / "kubeconfig")
    finally:
        kube.stop()


def _config(kubeconfig: Path, *, app_timeouts: dict[str, Any], **env: Any) -> Any:
    raw = config_dict(
        health_url="http://app.example/health",
        maintenance={"url": "http://app.example/admin/maintenance"},
        **env,
    )
    raw["environments"]["prod"]["targets"]["app"] = {
        "kind": "kubernetes",
        "namespace": NAMESPACE,
        "deployment": APP,
        "connection": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
        "timeouts": app_timeouts,
    }
    return parse_config(raw, path=Path("rollback.yml"))


def _timeouts(steps: Any) -> dict[str, float]:
    return {s.action.name: s.action.timeout for s in steps}


def test_a_targets_timeouts_then_the_environments_set_each_steps_limit(kubeconfig: Path) -> None:
    config = _config(
        kubeconfig,
        app_timeouts={"rollout_status": "10m", "health": "2m"},
        timeouts={"health": "5m", "maintenance": "45s"},
    )
    env = config.environment("prod")
    plan = Planner().build(env_name="prod", env=env, target="app", point="1")
    limits = _timeouts(plan.steps)
    assert limits["kubernetes.rollout_status"] == 600.0  # the target's
    assert limits["http.health"] == 120.0  # the target's, over the environment's 5m
    assert limits["http.maintenance_on"] == limits["http.maintenance_off"] == 45.0
    plain = Planner().build(
        env_name="prod",
        env=_config(kubeconfig, app_timeouts={}).environment("prod"),
        target="app",
        point="1",
    )
    assert limits["kubernetes.rollout_undo"] == _timeouts(plain.steps)["kubernetes.rollout_undo"]
    assert _timeouts(plain.steps)["kubernetes.rollout_status"] == 300.0  # rollout_timeout
    health = next(s for s in plan.steps if s.action.name == "http.health")
    assert "(up to 120 s)" in health.action.describe() and health.stored().timeout == 120.0


def test_resume_keeps_the_approved_timeouts_even_if_the_config_changed(kubeconfig: Path) -> None:
    approved = _config(kubeconfig, app_timeouts={"rollout_status": "10m", "health": "2m"})
    plan = Planner().build(
        env_name="prod", env=approved.environment("prod"), target="app", point="1"
    )
    later = _config(kubeconfig, app_timeouts={"rollout_status": "1m", "health": "30s"})
    restored = Planner().restore(
        env_name="prod",
        env=later.environment("prod"),
        target="app",
        point="1",
        force=False,
        stored=[s.stored() for s in plan.steps],
    )
    assert all(r.action is not None for r in restored)
    assert {r.stored.name: r.action.timeout for r in restored if r.action} == _timeouts(plan.steps)


@pytest.mark.parametrize(
    ("where", "timeouts", "problem"),
    [
        (
            "app",
            {"rollout_stat": "10m"},
            "environments.prod.targets.app.timeouts.rollout_stat: unknown step kind; one of: ",
        ),
        (
            "app",
            {"health": "ten minutes"},
            "environments.prod.targets.app.timeouts.health: 'ten minutes' is not a duration "
            "(write 90s, 10m, 1h or 2d)",
        ),
        (
            "env",
            {"health": 0},
            "environments.prod.timeouts.health: 0: a timeout must be more than 0 and at most 24h",
        ),
        (
            "env",
            ["health"],
            "environments.prod.timeouts: give a mapping of step kind to duration, e.g. "
            "{health: 5m}",
        ),
    ],
)
def test_a_wrong_timeout_is_refused_naming_the_field(
    where: str, timeouts: Any, problem: str
) -> None:
    raw = config_dict() if where == "app" else config_dict(timeouts=timeouts)
    if where == "app":
        raw["environments"]["prod"]["targets"]["app"]["timeouts"] = timeouts
    with pytest.raises(ConfigError) as error:
        parse_config(raw, path=Path("rollback.yml"))
    assert len(error.value.problems) == 1
    assert error.value.problems[0].startswith(problem), error.value.problems


def test_durations_are_read_as_people_write_them() -> None:
    assert duration(90) == 90.0
    assert duration("90s") == 90.0
    assert duration("10m") == 600.0
    assert duration("1h30m") == 5400.0
    with pytest.raises(ValueError, match="at most 24h"):
        duration("25h")
