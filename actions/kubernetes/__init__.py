"""Kubernetes application rollback: rollout history, undo, status, worker scaling.

Modules: `client` (the API client, reading a Deployment, error translation),
`rollout` (Deployment history and undo, kubectl's semantics), `workloads`
(StatefulSet and DaemonSet history, undo and status over ControllerRevisions),
`status` (rollout status over a watch), `workers` (stop and restart worker
Deployments), `autoscaling` (KEDA and HPAs on the workers), `target`
(KubernetesTarget and its parameters). Each module's docstring gives its design
reasoning.
"""

from actions.kubernetes.client import KubeConnection, api_client
from actions.kubernetes.rollout import PAUSED, Revision, RolloutUndo, rollout_history, rollout_undo
from actions.kubernetes.status import RolloutStatus, rollout_verdict
from actions.kubernetes.target import KubernetesParams, KubernetesTarget
from actions.kubernetes.workers import WORKER_REPLICAS, StartWorkers, StopWorkers
from actions.kubernetes.workloads import WorkloadStatus, WorkloadUndo, workload_undo

__all__ = [
    "PAUSED",
    "WORKER_REPLICAS",
    "KubeConnection",
    "KubernetesParams",
    "KubernetesTarget",
    "Revision",
    "RolloutStatus",
    "RolloutUndo",
    "StartWorkers",
    "StopWorkers",
    "WorkloadStatus",
    "WorkloadUndo",
    "api_client",
    "rollout_history",
    "rollout_undo",
    "rollout_verdict",
    "workload_undo",
]
