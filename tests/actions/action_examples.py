"""One planned action of every restorable kind, with the target that rebuilds it.

Both the recorder of `tests/fixtures/action_specs.json` and the test that reads it
build the actions here, so the fixture holds what this code stored when it was recorded.
Each entry is (key, target, action); nothing here talks to a live system: building an
action and its spec only reads the values given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

import actions.http as http
from actions.base import Action
from actions.configfiles.params import ConfigFilesParams
from actions.configfiles.steps import BackupConfig, RestartApp, RestoreConfig, RestorePreRollback
from actions.configfiles.target import ConfigFilesTarget
from actions.docker.params import DockerParams
from actions.docker.swap import SwapContainer
from actions.docker.target import DockerTarget
from actions.git.drill import WithdrawProposal
from actions.git.params import GitSource
from actions.git.step import ProposeGitChange
from actions.http.params import CustomerEmail, Maintenance, StatusPage, Webhook
from actions.kubernetes.drill import ConfirmReconcile, DrillHold, ResumeSync
from actions.kubernetes.forced import ForcedRollback
from actions.kubernetes.gitops import SuspendSync
from actions.kubernetes.params import KubernetesParams
from actions.kubernetes.rollout import RolloutUndo
from actions.kubernetes.status import RolloutStatus
from actions.kubernetes.target import KubernetesTarget
from actions.kubernetes.workers import StartWorkers, StopWorkers
from actions.kubernetes.workloads import WorkloadStatus, WorkloadUndo
from actions.loadbalancer.params import BlueGreenParams, Side
from actions.loadbalancer.steps import RestoreTraffic, SwitchTraffic
from actions.loadbalancer.target import BlueGreenTarget
from actions.loadbalancer.traffic import Route
from bot.config import CommunicationsPolicy, Environment
from bot.execution.planner import environment_step


class _EnvironmentSteps:
    """The environment's steps (maintenance, health, communications), restored as the runner
    restores them: by the planner, from the environment's config."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild the environment step `name` from its stored spec."""
        return environment_step(self.env, "prod", "api", name, spec)


FIXTURE = Path(__file__).parent.parent / "fixtures" / "action_specs.json"

BLUE = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/blue/1"
GREEN = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/green/2"
LISTENER = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/web/3/4"
HELD = {
    "tool": "argocd",
    "namespace": "argocd",
    "owner": "shop-api",
    "revert": "set deployment/api back to org/api:v1",
}
UNDO = {
    "namespace": "shop",
    "deployment": "api",
    "to_revision": 2,
    "from_revision": 3,
    "images": ["org/api:v1"],
}


def _route(weight_blue: int) -> Route:
    groups = [
        {"TargetGroupArn": BLUE, "Weight": weight_blue},
        {"TargetGroupArn": GREEN, "Weight": 100 - weight_blue},
    ]
    actions = [{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}, "Order": 1}]
    return Route("listener", LISTENER, LISTENER, "listener :443", actions)


def examples(root: Path) -> list[tuple[str, Any, Action]]:
    """Every example: its key in the fixture, the target that restores it, the action."""
    kube = KubernetesTarget(
        KubernetesParams(kind="kubernetes", namespace="shop", deployment="api", workers=["w"]),
        api=ApiClient(),
    )
    apps, api = kube.apps, ApiClient()
    git = GitSource(
        repository="https://git.example/org/deploy.git",
        path="apps/api",
        provider="github",
        project="org/deploy",
        token={"env": "GIT_TOKEN"},
    )
    docker = DockerTarget(
        DockerParams(kind="docker", container="web", image="app", health_url="http://h/health")
    )
    lb_params = BlueGreenParams(
        kind="bluegreen",
        listener_arn=LISTENER,
        blue=Side(target_group_arn=BLUE),
        green=Side(target_group_arn=GREEN),
        verify_timeout=30.0,
    )
    lb = BlueGreenTarget(lb_params, clients=lambda: None)
    config_params = ConfigFilesParams(
        kind="config",
        directory=str(root / "live"),
        backups=str(root / "backups"),
        restart_command=["true"],
    )
    config = ConfigFilesTarget(config_params)
    maintenance = Maintenance(url="http://app/admin/maintenance", token={"env": "ADMIN_TOKEN"})
    comms = CommunicationsPolicy(
        status_page=StatusPage(url="http://status/api"),
        internal_webhook=Webhook(url="http://hooks/T0/B0/secret"),
        customer_email=CustomerEmail(url="http://mail/send", to="customers@example.com"),
    )
    env = _EnvironmentSteps(
        Environment(
            incident_channel="C0123456789",
            approvers={"users": ["U0123456789"]},
            health_url="http://app/health",
            maintenance=maintenance,
            communications=comms,
            targets={"web": docker.params},
        )
    )
    assert comms.status_page and comms.internal_webhook and comms.customer_email
    return [
        (
            "kubernetes.rollout_undo",
            kube,
            RolloutUndo(
                apps=apps,
                namespace="shop",
                deployment="api",
                to_revision=3,
                from_revision=5,
                images=("org/api:v1", "org/side:v2"),
                timeout=90.0,
            ),
        ),
        (
            "kubernetes.rollout_status",
            kube,
            RolloutStatus(apps=apps, namespace="shop", deployment="api", timeout=200.0),
        ),
        (
            "kubernetes.workload_undo",
            kube,
            WorkloadUndo(
                apps=apps,
                kind="statefulset",
                namespace="shop",
                workload="db",
                to_revision=2,
                revision_name="db-7f9c",
                from_revision=4,
                images=("postgres:15",),
                timeout=60.0,
            ),
        ),
        (
            "kubernetes.forced_rollback",
            kube,
            ForcedRollback(
                apps=apps,
                namespace="shop",
                workload="db",
                revision_name="db-7f9c",
                bad_revision="db-a1b2",
                partition=1,
                timeout=120.0,
            ),
        ),
        (
            "kubernetes.workload_status",
            kube,
            WorkloadStatus(
                apps=apps, kind="daemonset", namespace="shop", workload="agent", timeout=300.0
            ),
        ),
        (
            "kubernetes.suspend_sync",
            kube,
            SuspendSync(
                api=api,
                tool="argocd",
                namespace="argocd",
                owner="shop-api",
                revert="revert the image bump",
                timeout=60.0,
            ),
        ),
        (
            "kubernetes.suspend_sync (applicationset)",
            kube,
            SuspendSync(
                api=api,
                tool="argocd-applicationset",
                namespace="argocd",
                owner="shop",
                revert="revert the image bump",
                children=("shop-api", "shop-web"),
                timeout=45.0,
            ),
        ),
        (
            "kubernetes.stop_workers",
            kube,
            StopWorkers(apps=apps, namespace="shop", workers=("w", "v"), timeout=120.0),
        ),
        (
            "kubernetes.start_workers",
            kube,
            StartWorkers(apps=apps, namespace="shop", workers=("w",), timeout=100.0),
        ),
        (
            "git.propose",
            kube,
            ProposeGitChange(
                source=git,
                workload="deployment/api",
                bad_images=("org/api:v2",),
                good_images=("org/api:v1",),
                timeout=180.0,
            ),
        ),
        (
            "git.propose (drill)",
            kube,
            ProposeGitChange(
                source=git,
                workload="deployment/api",
                bad_images=("org/api:v2",),
                good_images=("org/api:v1",),
                drill=True,
                timeout=180.0,
            ),
        ),
        (
            "git.withdraw",
            kube,
            WithdrawProposal(source=git, workload="deployment/api", timeout=120.0),
        ),
        (
            "kubernetes.drill_hold",
            kube,
            DrillHold(
                api=api,
                source=git,
                workload="deployment/api",
                images=("org/api:v1",),
                held=(HELD,),
                undo={"name": "kubernetes.rollout_undo", "spec": UNDO},
                timeout=120.0,
            ),
        ),
        (
            "kubernetes.resume_sync",
            kube,
            ResumeSync(api=api, suspend=HELD, timeout=60.0),
        ),
        (
            "kubernetes.confirm_reconcile",
            kube,
            ConfirmReconcile(
                api=api,
                source=git,
                owner=HELD,
                undo={"name": "kubernetes.rollout_undo", "spec": UNDO},
                timeout=300.0,
            ),
        ),
        (
            "docker.swap_container",
            docker,
            SwapContainer(
                container="web",
                from_image="web",
                from_image_id="sha256:" + "a" * 64,
                to_image="app:v1",
                to_image_id="sha256:" + "b" * 64,
                auto_remove=False,
                compose_service="",
                **docker._given(),
            ),
        ),
        (
            "docker.swap_container (compose, pulled)",
            docker,
            SwapContainer(
                container="web",
                from_image="web",
                from_image_id="sha256:" + "a" * 64,
                to_image="app:v0",
                to_image_id="",
                auto_remove=True,
                compose_service="shop/web",
                **docker._given(),
            ),
        ),
        (
            "loadbalancer.switch_traffic",
            lb,
            SwitchTraffic(
                params=lb_params,
                clients=lb.clients,
                to_colour="blue",
                reason="tagged stable",
                planned=[_route(0)],
            ),
        ),
        (
            "loadbalancer.switch_traffic (forced)",
            lb,
            SwitchTraffic(
                params=lb_params,
                clients=lb.clients,
                to_colour="green",
                reason="named by hand",
                planned=[_route(100)],
                force=True,
                failing=["green health fails: 503"],
            ),
        ),
        (
            "loadbalancer.restore_traffic",
            lb,
            RestoreTraffic(params=lb_params, clients=lb.clients, routes=[_route(100), _route(50)]),
        ),
        (
            "configfiles.backup",
            config,
            BackupConfig(params=config_params, restoring="2026-01-02T03-04-05.tar.gz"),
        ),
        (
            "configfiles.restore",
            config,
            RestoreConfig(params=config_params, backup="2026-01-02T03-04-05.tar.gz"),
        ),
        (
            "configfiles.restore_pre_rollback",
            config,
            RestorePreRollback(params=config_params),
        ),
        ("configfiles.restart", config, RestartApp(params=config_params)),
        ("http.maintenance_on", env, http.SetMaintenance(maintenance, enabled=True, timeout=20.0)),
        ("http.maintenance_off", env, http.SetMaintenance(maintenance, enabled=False)),
        ("http.health", env, http.HealthCheck("http://app/health", timeout=120.0)),
        (
            "http.health (after the switch)",
            env,
            http.HealthCheck("http://app/health", expect_status=204, check="health_after"),
        ),
        (
            "http.status_page",
            env,
            http.UpdateStatusPage(comms.status_page, status="operational", message="All good"),
        ),
        (
            "http.webhook",
            env,
            http.NotifyWebhook(
                comms.internal_webhook,
                text="Rolled back api in prod",
                fields={"Status": "System Operational", "Next Steps": "Root cause analysis"},
                color="warning",
                timeout=15.0,
            ),
        ),
        (
            "http.customer_email",
            env,
            http.SendCustomerEmail(comms.customer_email, subject="Restored", body="Sorry."),
        ),
    ]
