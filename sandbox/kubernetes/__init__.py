"""A stand-in Kubernetes API server, for the tests and `rollback-bot demo`.

It speaks the JSON the official client and kubectl expect (discovery, list,
watch, the status and scale subresources, JSON / merge / strategic-merge
patch, dryRun=All, server-side tables, SelfSubjectAccessReview) and runs the
controllers a rollback meets, each rule citing the upstream code it follows,
so `kubectl --kubeconfig` can be pointed at it and its answers serve as the
reference the bot's own code is checked against.

The package is split by concern: `objects` (resources, defaults, selectors,
errors, hashes), `patches`, `store` (objects, resourceVersions, watch log),
`controller` (Deployments), `pods` (ReplicaSet controller and kubelet),
`workloads` (StatefulSets, DaemonSets, ControllerRevisions), `autoscalers`
(KEDA, HPA), `gitops` (Argo CD and Flux syncing back), `rbac` (authorizer for
one configured user), `views` (discovery, tables, scale), `api` (verbs,
routes, admission) and `server` (HTTP and the public `FakeKubernetes`).
"""

from sandbox.kubernetes.server import FakeKubernetes

__all__ = ["FakeKubernetes"]
