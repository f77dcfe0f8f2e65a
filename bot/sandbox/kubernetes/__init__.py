"""A fake Kubernetes API server for apps/v1 Deployments, for the tests and `rollback-bot demo`.

It speaks the JSON the official client and kubectl expect (discovery, list,
watch, the status and scale subresources, JSON / merge / strategic-merge
patch, server-side tables) and runs a minimal deployment controller, so
`kubectl --kubeconfig` can be pointed at it and its answers serve as the
reference the bot's own code is checked against.

The package is split by concern: `objects` (defaults, selectors, errors),
`patches`, `store` (objects, resourceVersions, watch log), `controller`,
`views` (discovery, tables, scale), `api` (verbs and routes) and `server`
(HTTP and the public `FakeKubernetes`).
"""

from bot.sandbox.kubernetes.server import FakeKubernetes

__all__ = ["FakeKubernetes"]
