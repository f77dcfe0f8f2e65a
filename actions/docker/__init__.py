"""Docker application rollback: swap a container to another image over the Engine API.

Modules: `engine` (the Engine API client and version negotiation), `settings`
(what a container carries over to its successor), `auth` (registry
credentials for pulls), `swap` (the SwapContainer step: swap by rename, health,
switch back, resumable), `target` (DockerTarget: points, checks, plan,
restore). Each module's docstring gives its design reasoning.
"""

from actions.docker.engine import DockerClient, negotiate, short_id
from actions.docker.settings import HISTORY_LABEL, successor
from actions.docker.swap import SwapContainer, memory_key
from actions.docker.target import DockerParams, DockerTarget

__all__ = [
    "HISTORY_LABEL",
    "DockerClient",
    "DockerParams",
    "DockerTarget",
    "SwapContainer",
    "memory_key",
    "negotiate",
    "short_id",
    "successor",
]
