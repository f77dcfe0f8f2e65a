"""Kubernetes application rollback: rollout history, undo, status, worker scaling.

Modules: `client` (the API client, reading a Deployment, error translation),
`rollout` (Deployment history and undo, kubectl's semantics), `workloads`
(StatefulSet and DaemonSet history, undo and status over ControllerRevisions),
`status` (rollout status over a watch), `forced` (the forced rollback of an
OrderedReady StatefulSet), `workers` (stop and restart worker Deployments),
`autoscaling` (KEDA and HPAs on the workers), `gitops` and `owners` (Argo CD,
Flux and Helm owners and the parents that hold them), `target`
(KubernetesTarget), `workload_target` (its StatefulSet and DaemonSet part),
`revisions` (a revision as a ref names it and people pick it), `evidence` (the
verdict's evidence), `params` (its parameters, pydantic only). Each module's
docstring gives its design reasoning.

Only `params` is imported with the package; every other name is imported
where it is first used (`actions.exports.lazy`), so reading the config file
does not import the Kubernetes client (issue 16, point 6).
"""

from typing import TYPE_CHECKING

from actions.exports import lazy
from actions.kubernetes.params import KubeConnection, KubernetesParams

if TYPE_CHECKING:
    from actions.kubernetes.client import api_client
    from actions.kubernetes.rollout import (
        PAUSED,
        Revision,
        RolloutUndo,
        rollout_history,
        rollout_undo,
    )
    from actions.kubernetes.status import RolloutStatus, rollout_verdict
    from actions.kubernetes.target import KubernetesTarget
    from actions.kubernetes.workers import WORKER_REPLICAS, StartWorkers, StopWorkers
    from actions.kubernetes.workloads import WorkloadStatus, WorkloadUndo, workload_undo

__getattr__ = lazy(
    __name__,
    {
        "api_client": "client",
        "PAUSED": "rollout",
        "Revision": "rollout",
        "RolloutUndo": "rollout",
        "rollout_history": "rollout",
        "rollout_undo": "rollout",
        "RolloutStatus": "status",
        "rollout_verdict": "status",
        "KubernetesTarget": "target",
        "WORKER_REPLICAS": "workers",
        "StartWorkers": "workers",
        "StopWorkers": "workers",
        "WorkloadStatus": "workloads",
        "WorkloadUndo": "workloads",
        "workload_undo": "workloads",
    },
)

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
