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

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as kube

from actions.base import (
    ActionError,
    PermanentError,
    Step,
    StepContext,
    StepResult,
    TemporaryError,
    fixed,
    given,
)
from actions.children import run_child
from actions.configfiles.archives import (
    dir_attrs,
    extract,
    is_mount_point,
    make_archive,
    prepare_staging,
    resume_contents,
    resume_directory,
    staging_for,
    swap_directory,
    sweep,
    verify_archive,
)
from actions.configfiles.params import PRE_BACKUP_KEY, ConfigFilesParams, RestartDeployment
from actions.configfiles.stores import BackupStore, backup_name, backup_store, backup_time
from actions.http.health import poll_health
from actions.kubernetes.client import api_client

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restore_key(params: ConfigFilesParams) -> str:
    """Return the memory key of the restore journal for `params.directory`."""
    return f"configfiles.restore:{params.directory}"


def restart_key(params: ConfigFilesParams) -> str:
    """Return the memory key recording that the restart was done."""
    return f"configfiles.restarted:{params.directory}"


class BackupConfig(Step):
    """Archive the live configuration before the rollback changes it."""

    name: str = fixed("configfiles.backup")
    idempotent: bool = fixed(True)
    timeout: float = given(default=120.0)
    params: ConfigFilesParams = given(kw_only=False)
    restoring: str

    def describe(self) -> str:
        """Say what is archived and where to."""
        where = self.params.backups.rstrip("/")
        stamp = backup_time(self.restoring)
        suffix = f".before-{stamp:%Y%m%d_%H%M%S}" if stamp else ""
        return (
            f"Back up {self.params.directory} to {where}/config_backup_<now>{suffix}.tar.gz "
            f"(the bot's pre-rollback backup: undoes the restore of {self.restoring})"
        )

    def run(self, ctx: StepContext) -> StepResult:
        """Write, verify and store a new archive; reuse this run's archive when resumed."""
        store = backup_store(self.params)
        done = ctx.memory.get(PRE_BACKUP_KEY)
        if done and store.exists(done):
            return StepResult(
                summary=f"already backed up as {done}", skipped=True, data={"backup": done}
            )
        live = Path(self.params.directory)
        if not live.is_dir():
            raise PermanentError(f"configuration directory {live} does not exist")
        name = backup_name(datetime.now(UTC), before=backup_time(self.restoring))
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
            members = verify_archive(path, label=f"new backup of {live}", limits=self.params.limits)
            store.put(path, path.name)
        except OSError as exc:
            raise PermanentError(f"backup of {live} failed: {exc}") from exc
        return members


class RestoreConfig(Step):
    """Replace the live configuration with one backup, whole or not at all.

    The journal in `ctx.memory` (`restore_key`) is written once the archive is extracted
    beside (or, for a mount point, inside) the live directory and before the first rename,
    so a resumed step finishes the swap instead of starting over.
    """

    name: str = fixed("configfiles.restore")
    idempotent: bool = fixed(True)
    timeout: float = given(default=300.0)
    params: ConfigFilesParams = given(kw_only=False)
    backup: str

    def describe(self) -> str:
        """Name the archive and the directory it replaces."""
        where = backup_store(self.params).where(self.backup)
        how = "extract beside it, then swap; a mount point is swapped entry by entry"
        return f"Restore {self.params.directory} from {where} ({how})"

    def run(self, ctx: StepContext) -> StepResult:
        """Check the archive, extract it, swap it in; finish a swap a crash interrupted."""
        live = Path(self.params.directory)
        journal = ctx.memory.get(restore_key(self.params))
        if journal is not None and journal["phase"] == "done":
            return StepResult(
                summary=f"already restored {live} from {self.backup}",
                skipped=True,
                data=self._data(ctx, journal),
            )
        if journal is None:
            journal = self._stage(ctx, live)
        self._swap(ctx, live, journal)
        journal = {**journal, "phase": "done"}
        ctx.memory[restore_key(self.params)] = journal
        ctx.emit(f"restored {live} from {self.backup} ({journal['members']} entries)")
        return StepResult(
            summary=f"restored {live} from {self.backup}", data=self._data(ctx, journal)
        )

    def _stage(self, ctx: StepContext, live: Path) -> dict[str, Any]:
        store = backup_store(self.params)
        sweep(live, keep=set())
        in_place = is_mount_point(live)
        new, old = staging_for(live, in_place=in_place)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / self.backup
            store.fetch(self.backup, archive)
            label = store.where(self.backup)
            members = verify_archive(archive, label=label, limits=self.params.limits)
            try:
                prepare_staging(live, new)
                extract(archive, new)
            except (OSError, tarfile.TarError, zlib.error, EOFError) as exc:
                shutil.rmtree(new, ignore_errors=True)
                raise PermanentError(
                    f"restore of {live} from {self.backup} failed: {exc}; {live} is unchanged"
                ) from exc
        journal = {
            "phase": "swapping",
            "in_place": in_place,
            "new": str(new),
            "old": str(old),
            "attrs": dir_attrs(new),
            "incoming": sorted(os.listdir(new)),
            "members": members,
        }
        ctx.memory[restore_key(self.params)] = journal
        return journal

    def _swap(self, ctx: StepContext, live: Path, journal: dict[str, Any]) -> None:
        new, old = Path(journal["new"]), Path(journal["old"])
        try:
            if journal["in_place"]:
                ctx.emit(f"{live} is a mount point: swapping its entries one by one")
                resume_contents(
                    live, new, old, incoming=journal["incoming"], attrs=journal["attrs"]
                )
            elif not new.exists() or not live.exists() or old.exists():
                resume_directory(live, new, old)
            else:
                swap_directory(live, new, old)
        except OSError as exc:
            raise PermanentError(self._half_done(ctx, live, exc, journal)) from exc

    def _half_done(
        self, ctx: StepContext, live: Path, exc: OSError, journal: dict[str, Any]
    ) -> str:
        new, old = Path(journal["new"]), Path(journal["old"])
        if not journal["in_place"] and live.exists() and not old.exists():
            shutil.rmtree(new, ignore_errors=True)
            del ctx.memory[restore_key(self.params)]
            del_note = f"{live} is unchanged"
        else:
            del_note = (
                f"{live} is part way through the swap: new entries not yet in place are in "
                f"{new}, replaced ones in {old}; running this step again finishes it"
            )
        return f"restore of {live} from {self.backup} failed: {exc}; {del_note}"

    def _data(self, ctx: StepContext, journal: dict[str, Any]) -> dict[str, Any]:
        return {
            "backup": self.backup,
            "members": journal["members"],
            "in_place": journal["in_place"],
            "pre_rollback_backup": ctx.memory.get(PRE_BACKUP_KEY),
        }


class RestorePreRollback(Step):
    """Restore the pre-rollback backup this run took: a drill's roll-forward.

    Its name is chosen when the backup is taken (the time of the step), so it is read
    from memory, not stored in the plan; the restore is `RestoreConfig`'s, whole or not
    at all.
    """

    name: str = fixed("configfiles.restore_pre_rollback")
    idempotent: bool = fixed(True)
    timeout: float = given(default=300.0)
    params: ConfigFilesParams = given(kw_only=False)

    def describe(self) -> str:
        """Say which archive goes back: the one this run took before its rollback."""
        where = self.params.backups.rstrip("/")
        return (
            f"Restore {self.params.directory} from the backup this run took of it before the "
            f"rollback ({where}/config_backup_<time of that step>….tar.gz): the configuration "
            "that was live before the drill"
        )

    def label(self) -> str:
        """Words for people."""
        return f"Roll {self.params.directory} forward to the configuration live before"

    def run(self, ctx: StepContext) -> StepResult:
        """Restore the archive the pre-rollback backup recorded in memory."""
        name = ctx.memory.get(PRE_BACKUP_KEY)
        if not name:
            raise PermanentError(
                f"this run took no pre-rollback backup of {self.params.directory}: nothing to "
                "roll forward to; it is as the rollback left it"
            )
        return RestoreConfig(self.params, backup=str(name), timeout=self.timeout).run(ctx)


class RestartApp(Step):
    """Restart the application so it reads the restored configuration, then poll its health."""

    name: str = fixed("configfiles.restart")
    idempotent: bool = fixed(True)
    timeout: float = fixed(0.0)
    params: ConfigFilesParams = given(kw_only=False)

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
        if restart_key(self.params) in ctx.memory:
            lines.append(f"already restarted at {ctx.memory[restart_key(self.params)]}")
        elif self.params.restart_command:
            lines.append(_run_command(self.params.restart_command, ctx=ctx, params=self.params))
        elif self.params.restart_deployment:
            lines.append(_rollout_restart(self.params.restart_deployment))
        if self.params.restart_command or self.params.restart_deployment:
            ctx.memory.setdefault(restart_key(self.params), datetime.now(UTC).isoformat())
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
        done = run_child(argv, timeout=limit, merge_stderr=True)
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
