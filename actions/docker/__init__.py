"""Docker application rollback: swap a container to a previous image over the Engine API.

Modules: `engine` (the Engine API client), `swap` (the SwapContainer step:
record, retire, create, start, verify, resumable), `target` (DockerTarget and
its parameters). Each module's docstring gives its design reasoning.
"""

from actions.docker.engine import DockerClient, short_id
from actions.docker.swap import SwapContainer, create_body, memory_key
from actions.docker.target import DockerParams, DockerTarget

__all__ = [
    "DockerClient",
    "DockerParams",
    "DockerTarget",
    "SwapContainer",
    "create_body",
    "memory_key",
    "short_id",
]
