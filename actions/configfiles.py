"""Configuration rollback: back up and restore a configuration directory from tar.gz archives.

The procedures' script empties the live directory and untars over it, so a
bad archive leaves it half-written. Here every archive is checked whole before
anything changes (gzip CRC, tar headers, and each member: no absolute paths,
no `..`, no links leading out, no device files), then extracted into a sibling
directory and renamed into place. A failure while extracting removes the
sibling and leaves the live directory as it was; the swap itself is two
renames on one filesystem, undone if the second fails.

Backups keep the procedures' names, `config_backup_<YYYYmmdd_HHMMSS>.tar.gz`
(UTC), in a local directory or under an S3 prefix, and sort newest first by the
time in the name. The default rollback point is resolved when the plan is made,
so the backup the plan itself takes first is never the one restored, and the
approved description names the exact archive. The pre-rollback backup checks
itself with the restore's own rules, so a backup that could not be restored
later (say, a symlink to /etc) fails now, while the live directory is intact.

Restart is an argv command (a systemd unit) or a Kubernetes rollout restart,
the same annotation patch `kubectl rollout restart` sends, followed by health
polling with backoff.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import urllib3
from botocore.exceptions import ClientError
from kubernetes import client as kube
from kubernetes import config as kubeconfig
from kubernetes.config.config_exception import ConfigException
from pydantic import model_validator

from actions.aws import aws_client, aws_errors
from actions.base import (
    ActionError,
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    StepContext,
    StepResult,
    TargetPlan,
    TemporaryError,
)
from actions.http import poll_health
from actions.kubernetes import KubeConnection
from actions.params import AwsConnection, Strict

NAME_PATTERN = re.compile(r"^config_backup_(\d{8}_\d{6})\.tar\.gz$")
PRE_BACKUP_KEY = "configfiles.pre_rollback_backup"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


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

    @model_validator(mode="after")
    def _one_restart(self) -> ConfigFilesParams:
        if self.restart_command is not None and self.restart_deployment is not None:
            raise ValueError("give at most one of 'restart_command' or 'restart_deployment'")
        if self.restart_command == []:
            raise ValueError("'restart_command' needs at least the program to run")
        return self


# --- names and stores -------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    """One stored configuration archive."""

    name: str
    created_at: datetime
    size: int | None = None


def backup_name(at: datetime) -> str:
    """Return the archive name for a backup taken at `at` (UTC)."""
    return f"config_backup_{at.astimezone(UTC):%Y%m%d_%H%M%S}.tar.gz"


def backup_time(name: str) -> datetime | None:
    """Return the UTC time in a backup's name, or None if it is not a backup name."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)


def _newest_first(found: list[Backup]) -> list[Backup]:
    return sorted(found, key=lambda b: (b.created_at, b.name), reverse=True)


def _require_name(name: str) -> None:
    if backup_time(name) is None:
        raise PermanentError(f"{name!r} is not a backup name (config_backup_<time>.tar.gz)")


class BackupStore(Protocol):
    """Where configuration archives are kept."""

    def list(self) -> list[Backup]:
        """Return the backups, newest first."""
        ...

    def exists(self, name: str) -> bool:
        """Say whether backup `name` is stored."""
        ...

    def fetch(self, name: str, dest: Path) -> None:
        """Copy backup `name` to the local file `dest`."""
        ...

    def put(self, source: Path, name: str) -> None:
        """Store the local file `source` as backup `name`, complete or not at all."""
        ...

    def where(self, name: str) -> str:
        """Return where backup `name` lives, for people."""
        ...


class LocalBackups:
    """Backups in a local directory; writes land under a temporary name, then rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def list(self) -> list[Backup]:
        """Return the backups, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in os.scandir(self.directory):
            created = backup_time(entry.name)
            if created is not None and entry.is_file():
                found.append(Backup(entry.name, created, entry.stat().st_size))
        return _newest_first(found)

    def exists(self, name: str) -> bool:
        """Say whether backup `name` is stored."""
        return (self.directory / name).is_file()

    def fetch(self, name: str, dest: Path) -> None:
        """Copy backup `name` to `dest`."""
        _require_name(name)
        if not self.exists(name):
            raise PermanentError(f"backup {self.where(name)} not found")
        shutil.copyfile(self.directory / name, dest)

    def put(self, source: Path, name: str) -> None:
        """Copy `source` in beside its final name, then rename it into place."""
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.directory / f".{name}.part"
        shutil.copyfile(source, part)
        os.replace(part, self.directory / name)

    def where(self, name: str) -> str:
        """Return the backup's path."""
        return str(self.directory / name)


class S3Backups:
    """Backups under an S3 prefix (`s3://bucket/prefix`)."""

    def __init__(self, url: str, aws: AwsConnection) -> None:
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = aws_client(aws, "s3")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def list(self) -> list[Backup]:
        """Return the backups directly under the prefix, newest first."""
        start = self._key("")
        found = []
        with aws_errors(f"list {self.where('')}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(start) :]
                    created = backup_time(name)
                    if created is not None:
                        found.append(Backup(name, created, item["Size"]))
        return _newest_first(found)

    def exists(self, name: str) -> bool:
        """Say whether backup `name` is stored."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            with aws_errors(f"look up {self.where(name)}"):
                raise
        return True

    def fetch(self, name: str, dest: Path) -> None:
        """Download backup `name` to `dest`."""
        _require_name(name)
        if not self.exists(name):
            raise PermanentError(f"backup {self.where(name)} not found")
        with aws_errors(f"download {self.where(name)}"), dest.open("wb") as out:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
            shutil.copyfileobj(body, out)

    def put(self, source: Path, name: str) -> None:
        """Upload `source` and confirm S3 holds all of it."""
        size = source.stat().st_size
        with aws_errors(f"upload {self.where(name)}"), source.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=body)
            stored = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        if stored["ContentLength"] != size:
            raise PermanentError(f"{self.where(name)} holds {stored['ContentLength']} of {size} B")

    def where(self, name: str) -> str:
        """Return the backup's s3:// URL."""
        return f"s3://{self.bucket}/{self._key(name)}"


def backup_store(params: ConfigFilesParams) -> BackupStore:
    """Return the store `params.backups` names."""
    if params.backups.startswith("s3://"):
        return S3Backups(params.backups, params.aws)
    return LocalBackups(Path(params.backups))


# --- archives -----------------------------------------------------------------------


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Say why extracting `member` could write outside its directory, or None if it cannot."""
    if member.name.startswith("/"):
        return "absolute path"
    if ".." in member.name.split("/"):
        return "'..' in its path"
    if member.isdev():
        return "device file or FIFO"
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        base = posixpath.dirname(member.name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            return f"{kind} to {member.linkname} leaves the directory"
    elif not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


def verify_archive(path: Path, *, label: str) -> int:
    """Check that `path` is a whole, safe tar.gz; return its member count."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise PermanentError(f"{label} is not a readable tar.gz: {exc}") from exc
    for member in members:
        reason = unsafe_reason(member)
        if reason is not None:
            raise PermanentError(f"{label}: refusing member {member.name!r}: {reason}")
    return len(members)


def make_archive(directory: Path, dest: Path) -> None:
    """Write `directory`'s contents to `dest` as tar.gz, members named `./...` like `tar -C`."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(directory, arcname=".")


def _keep_owner(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Apply tarfile's `data` filter but keep recorded owners (applied only when root)."""
    safe = tarfile.data_filter(member, dest)
    if safe is None:
        return None
    return safe.replace(
        uid=member.uid, gid=member.gid, uname=member.uname, gname=member.gname, deep=False
    )


def restore_directory(archive: Path, live: Path) -> None:
    """Extract a verified `archive` beside `live`, then swap it in; `live` is untouched on error."""
    _sweep(live, "restore")
    staging = Path(tempfile.mkdtemp(dir=live.parent, prefix=f".{live.name}.restore-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter=_keep_owner)
        _copy_directory_attributes(live, staging)
        _swap(staging, live)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PermanentError(
            f"restore of {live} from {archive.name} failed: {exc}; {live} is unchanged"
        ) from exc
    _sweep(live, "old")


def _copy_directory_attributes(live: Path, staging: Path) -> None:
    if not live.exists():
        staging.chmod(0o755)
        return
    info = live.stat()
    staging.chmod(info.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(staging, info.st_uid, info.st_gid)


def _swap(staging: Path, live: Path) -> None:
    old = live.parent / f".{live.name}.old-{uuid.uuid4().hex[:8]}"
    if live.exists():
        os.rename(live, old)
    try:
        os.rename(staging, live)
    except OSError:
        if old.exists():
            os.rename(old, live)
        raise


def _sweep(live: Path, kind: str) -> None:
    """Remove siblings a crashed or finished restore left (`.<name>.<kind>-*`)."""
    for leftover in live.parent.glob(f".{live.name}.{kind}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


# --- actions ----------------------------------------------------------------------


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


def _kube_api(connection: KubeConnection) -> kube.ApiClient:
    if connection.mode == "in-cluster":
        configuration = kube.Configuration()
        kubeconfig.load_incluster_config(client_configuration=configuration)
        return kube.ApiClient(configuration)
    return kubeconfig.new_client_from_config(
        config_file=connection.kubeconfig, context=connection.context
    )


def _rollout_restart(target: RestartDeployment) -> str:
    """Annotate the pod template as `kubectl rollout restart` does."""
    what = f"deployment {target.namespace}/{target.deployment}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    try:
        api = _kube_api(target.connection)
    except ConfigException as exc:
        raise PermanentError(f"cannot load Kubernetes configuration: {exc}") from exc
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


# --- the target -----------------------------------------------------------------------


class ConfigFilesTarget:
    """A configuration directory whose rollback points are its stored backups."""

    def __init__(self, params: ConfigFilesParams) -> None:
        self.params = params

    def points(self) -> list[RollbackPoint]:
        """List stored backups, newest first."""
        return [self._point(b) for b in backup_store(self.params).list()]

    def checks(self, ref: str | None) -> list[Check]:
        """Check the backup exists and is a whole, safe archive, and the directory exists."""
        live = Path(self.params.directory)
        checks = [Check("configuration directory exists", live.is_dir(), str(live))]
        try:
            name = self._resolve(ref)
        except PlanningError as exc:
            return [*checks, Check("backup exists", False, str(exc))]
        store = backup_store(self.params)
        checks.append(Check("backup exists", True, store.where(name)))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                store.fetch(name, Path(tmp) / name)
                members = verify_archive(Path(tmp) / name, label=name)
        except ActionError as exc:
            return [*checks, Check("backup readable and safe", False, str(exc))]
        return [*checks, Check("backup readable and safe", True, f"{members} entries")]

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Back up, restore `ref` (None: the newest backup), restart; `force` changes nothing."""
        name = self._resolve(ref)
        has_restart = self.params.restart_command or self.params.restart_deployment
        verify = [RestartApp(self.params)] if has_restart or self.params.health_url else []
        notes = [] if has_restart else ["no restart configured: the app must reload by itself"]
        return TargetPlan(
            prepare=[BackupConfig(self.params)],
            rollback=[RestoreConfig(self.params, backup=name)],
            verify=list(verify),
            notes=notes,
        )

    def _resolve(self, ref: str | None) -> str:
        try:
            backups = backup_store(self.params).list()
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        if ref is None:
            if not backups:
                raise PlanningError(f"no configuration backup in {self.params.backups}")
            return backups[0].name
        if ref not in {b.name for b in backups}:
            raise PlanningError(f"no backup {ref!r} in {self.params.backups}")
        return ref

    def _point(self, backup: Backup) -> RollbackPoint:
        size = f" · {backup.size / 1024:.1f} KiB" if backup.size is not None else ""
        label = f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC{size}"
        return RollbackPoint(ref=backup.name, label=label, created_at=backup.created_at)
