"""Configuration rollback: back up and restore a configuration directory from tar.gz archives."""

from __future__ import annotations

from typing import Literal

from actions.params import AwsConnection, Strict


class RestartDeployment(Strict):
    """Restart by `kubectl rollout restart`-style annotation of a Deployment."""

    namespace: str
    deployment: str


class ConfigFilesParams(Strict):
    """The live configuration directory, where its backups live, and how to restart the app.

    `backups` is a local directory or `s3://bucket/prefix`.
    `restart_command` is an argv list (for example a systemd unit restart);
    `restart_deployment` restarts a Kubernetes Deployment instead.
    """

    kind: Literal["config"]
    directory: str
    backups: str
    restart_command: list[str] | None = None
    restart_deployment: RestartDeployment | None = None
    health_url: str | None = None
    aws: AwsConnection = AwsConnection()
