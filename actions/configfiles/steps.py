"""The configuration rollback's steps: back up, restore, restart and poll health.

The pre-rollback backup checks itself with the restore's own rules, so a
backup that could not be restored later (say, a symlink to /etc) fails now,
while the live directory is intact.

Restart is an argv command (a systemd unit) or a Kubernetes rollout restart,
the same annotation patch `kubectl rollout restart` sends, followed by health
polling with backoff (`actions.http`'s one poller). The Kubernetes client is
built by `actions.kubernetes`' `api_client`; the restart's errors keep their
own wording (status and body of the API's answer).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as kube

from actions.base import ActionError, PermanentError, StepContext, StepResult, TemporaryError
from actions.configfiles.archives import make_archive, restore_directory, verify_archive
from actions.configfiles.params import ConfigFilesParams, RestartDeployment
from actions.configfiles.stores import BackupStore, backup_name, backup_store
from actions.http.health import poll_health
from actions.kubernetes.client import api_client

PRE_BACKUP_KEY = "configfiles.pre_rollback_backup"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass
class BackupConfig:
    """Archive the live configuration before the rollback changes it."""

    params: ConfigFilesParams
    name: str = "configfiles.backup"
    idempotent: bool = True
    timeout: float = 120.0

    def describe(self) -> str:
        """Say what is archived and where to."""
        where = self.params.backups.rstrip("/")
        return f"Back up {self.params.directory} to {where}/config_backup_<now>.tar.gz"

    def run(self, ctx: StepContext) -> StepResult:
        """Write, verify and store a new archive; reuse this run's archive when resumed."""
        store = backup_store(self.params)
        done = ctx.memory.get(PRE_BACKUP_KEY)
        if done and store.exists(done):
            return StepResult(summary=f"already backed up as {done}", data={"backup": done})
        live = Path(self.params.directory)
        if not live.is_dir():
            raise PermanentError(f"configuration directory {live} does not exist")
        name = backup_name(datetime.now(UTC))
        if store.exists(name):
            raise TemporaryError(f"{store.where(name)} already exists; retrying", delay=1.0)
        with tempfile.TemporaryDirectory() as tmp:
            members = self._write(live, Path(tmp) / name, store)
        ctx.memory[PRE_BACKUP_KEY] = name
        ctx.emit(f"backed up {live} to {store.where(name)} ({members} entries)")
        return StepResult(
            summary=f"backed up {live} as {name}",
            data={"backup": name, "location": store.where(name), "members": members},
        )

    def _write(self, live: Path, path: Path, store: BackupStore) -> int:
        try:
            make_archive(live, path)
            members = verify_archive(path, label=f"new backup of {live}")
            store.put(path, path.name)
        except OSError as exc:
            raise PermanentError(f"backup of {live} failed: {exc}") from exc
        return members


@dataclass
class RestoreConfig:
    """Replace the live configuration with one backup, whole or not at all."""

    params: ConfigFilesParams
    backup: str
    name: str = "configfiles.restore"
    idempotent: bool = True
    timeout: float = 300.0

    def describe(self) -> str:
        """Name the archive and the directory it replaces."""
        where = backup_store(self.params).where(self.backup)
        return f"Restore {self.params.directory} from {where} (extract beside it, then swap)"

    def run(self, ctx: StepContext) -> StepResult:
        """Fetch and check the archive, then extract it beside the live directory and swap."""
        store = backup_store(self.params)
        live = Path(self.params.directory)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / self.backup
            store.fetch(self.backup, archive)
            members = verify_archive(archive, label=store.where(self.backup))
            restore_directory(archive, live)
        ctx.emit(f"restored {live} from {self.backup} ({members} entries)")
        return StepResult(
            summary=f"restored {live} from {self.backup}",
            data={
                "backup": self.backup,
                "members": members,
                "pre_rollback_backup": ctx.memory.get(PRE_BACKUP_KEY),
            },
        )


@dataclass
class RestartApp:
    """Restart the application so it reads the restored configuration, then poll its health."""

    params: ConfigFilesParams
    name: str = "configfiles.restart"
    idempotent: bool = True
    timeout: float = 0.0

    def __post_init__(self) -> None:
        self.timeout = self.params.restart_timeout + self.params.health_timeout

    def describe(self) -> str:
        """Name the restart command or Deployment and the health URL."""
        if self.params.restart_command:
            text = f"Run `{' '.join(self.params.restart_command)}`"
        elif self.params.restart_deployment:
            target = self.params.restart_deployment
            text = f"Rollout-restart deployment {target.namespace}/{target.deployment}"
        else:
            text = "Restart nothing (none configured)"
        if self.params.health_url:
            text += f", then poll {self.params.health_url} until it passes"
        return text

    def run(self, ctx: StepContext) -> StepResult:
        """Restart, then poll the health URL until it passes or the step's time is up."""
        lines = []
        if self.params.restart_command:
            lines.append(_run_command(self.params.restart_command, ctx=ctx, params=self.params))
        elif self.params.restart_deployment:
            lines.append(_rollout_restart(self.params.restart_deployment))
        data: dict[str, Any] = {}
        if self.params.health_url:
            budget = min(self.params.health_timeout, ctx.remaining())
            health = poll_health(self.params.health_url, deadline=time.monotonic() + budget)
            if not health.ok:
                raise PermanentError(
                    f"{health.detail} after restart; still failing after "
                    f"{health.attempts} tries in {health.elapsed:.1f}s"
                )
            lines.append(f"healthy: {health.detail} after {health.elapsed:.1f}s")
            data["recovery_seconds"] = round(health.elapsed, 3)
        return StepResult(summary="application restarted", output="\n".join(lines), data=data)


def _run_command(argv: list[str], *, ctx: StepContext, params: ConfigFilesParams) -> str:
    limit = max(0.1, min(params.restart_timeout, ctx.remaining()))
    shown = " ".join(argv)
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired as exc:
        raise PermanentError(f"`{shown}` did not finish within {limit:.0f}s") from exc
    except OSError as exc:
        raise PermanentError(f"cannot run `{shown}`: {exc}") from exc
    for line in done.stdout.splitlines():
        ctx.emit(line)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-10:])
        raise PermanentError(f"`{shown}` exited with status {done.returncode}:\n{tail}")
    return done.stdout.rstrip("\n")


def _rollout_restart(target: RestartDeployment) -> str:
    """Annotate the pod template as `kubectl rollout restart` does."""
    what = f"deployment {target.namespace}/{target.deployment}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    api = api_client(target.connection)
    try:
        kube.AppsV1Api(api).patch_namespaced_deployment(
            target.deployment,
            target.namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
            _request_timeout=30,
        )
    except kube.ApiException as exc:
        raise _kube_error(what, exc) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"restart {what}: cannot reach the API server: {exc}") from exc
    finally:
        api.close()
    return f"restarted {what} (restartedAt {now})"


def _kube_error(what: str, exc: kube.ApiException) -> ActionError:
    status = exc.status or 0
    message = f"restart {what}: {status} {exc.reason}: {exc.body or ''}".rstrip(": ")
    if status == 429 or status >= 500:
        return TemporaryError(message, delay=2.0)
    return PermanentError(message)
