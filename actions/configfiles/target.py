"""The configuration target: its backups as rollback points, its checks and plan.

The default rollback point is resolved when the plan is made, so the backup the
plan itself takes first is never the one restored, and the approved description
names the exact archive.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from actions.base import ActionError, Check, PlanningError, RollbackPoint, TargetPlan
from actions.configfiles.archives import verify_archive
from actions.configfiles.params import ConfigFilesParams
from actions.configfiles.steps import BackupConfig, RestartApp, RestoreConfig
from actions.configfiles.stores import Backup, backup_store


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
