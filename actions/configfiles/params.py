"""The configuration target's parameters: the live directory, its backups, how to restart.

At most one restart (an argv command or a Deployment) is allowed; a typo in the
config file is an error (`Strict`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from actions.kubernetes.params import KubeConnection
from actions.params import AwsConnection, Strict

if TYPE_CHECKING:  # archives imports tarfile and actions.base: not needed to read the config
    from actions.configfiles.archives import Limits


class RestartDeployment(Strict):
    """Restart by `kubectl rollout restart`-style annotation of a Deployment."""

    namespace: str
    deployment: str
    connection: KubeConnection = KubeConnection()


class ConfigFilesParams(Strict):
    """The live configuration directory, where its backups live, and how to restart the app.

    `backups` is a local directory or `s3://bucket/prefix`.
    `restart_command` is an argv list (for example a systemd unit restart);
    `restart_deployment` restarts a Kubernetes Deployment instead.
    `max_members` and `max_bytes` (expanded size of the files) bound what an archive may
    hold; a larger one is refused when the plan is built.
    """

    kind: Literal["config"]
    directory: str
    backups: str
    restart_command: list[str] | None = None
    restart_deployment: RestartDeployment | None = None
    health_url: str | None = None
    aws: AwsConnection = AwsConnection()
    restart_timeout: float = 120.0
    health_timeout: float = 120.0
    max_members: int = Field(default=10_000, gt=0)
    max_bytes: int = Field(default=64 * 2**20, gt=0)

    @model_validator(mode="after")
    def _one_restart(self) -> ConfigFilesParams:
        if self.restart_command is not None and self.restart_deployment is not None:
            raise ValueError("give at most one of 'restart_command' or 'restart_deployment'")
        if self.restart_command == []:
            raise ValueError("'restart_command' needs at least the program to run")
        return self

    @property
    def limits(self) -> Limits:
        """The archive limits these params set."""
        from actions.configfiles.archives import Limits

        return Limits(max_members=self.max_members, max_bytes=self.max_bytes)


PRE_BACKUP_KEY = "configfiles.pre_rollback_backup"
"""The memory key of the name of the pre-rollback backup a run took (here, not in `steps`,
so a drill's roll-forward can name it without importing the steps' clients)."""
