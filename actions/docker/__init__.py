"""Docker application rollback: swap a container to another image over the Engine API.

Modules: `engine` (the Engine API client and version negotiation), `settings`
(what a container carries over to its successor), `auth` (registry
credentials for pulls), `swap` (the SwapContainer step: swap by rename,
switch back, resumable), `health` (whether the new container is healthy),
`target` (DockerTarget: points, checks, plan, restore). Each module's
docstring gives its design reasoning.

Only the light `params` module is imported with the package; every other name
is imported where it is first used (`actions.exports.lazy`), so reading the
config file imports no client (issue 16, point 6).
"""

from typing import TYPE_CHECKING

from actions.docker.params import DockerParams
from actions.exports import lazy

if TYPE_CHECKING:
    from actions.docker.engine import DockerClient, negotiate, short_id
    from actions.docker.settings import HISTORY_LABEL, successor
    from actions.docker.swap import SwapContainer, memory_key
    from actions.docker.target import DockerTarget

__getattr__ = lazy(
    __name__,
    {
        "DockerClient": "engine",
        "negotiate": "engine",
        "short_id": "engine",
        "HISTORY_LABEL": "settings",
        "successor": "settings",
        "SwapContainer": "swap",
        "memory_key": "swap",
        "DockerTarget": "target",
    },
)

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
