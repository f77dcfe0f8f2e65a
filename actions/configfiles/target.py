"""The configuration target: its backups as rollback points, its checks and plan.

The default rollback point is resolved when the plan is made, so the backup the
plan itself takes first is never the one restored, and the approved description
names the exact archive. The archive is fetched and checked whole (safety and
size limits) when the plan is built, so a bad archive is never approvable.

After a rollback the store holds the bot's pre-rollback backup, named
`.before-<restored time>`: it is offered as "undo the last rollback" but marked
`avoid`, so it is never the default, and it tells which backup is live now
(marked current), so the next default is the backup before that one, as
`bot.domain.plans.default_point` picks it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from actions.base import (
    Action,
    ActionError,
    Check,
    PlanningError,
    RollbackPoint,
    TargetPlan,
    rebuild_step,
)
from actions.configfiles.archives import verify_archive
from actions.configfiles.params import ConfigFilesParams
from actions.configfiles.steps import BackupConfig, RestartApp, RestoreConfig, RestorePreRollback
from actions.configfiles.stores import Backup, backup_store

PRE_ROLLBACK = "the bot's own backup of the configuration a rollback replaced"


class ConfigFilesTarget:
    """A configuration directory whose rollback points are its stored backups."""

    def __init__(self, params: ConfigFilesParams) -> None:
        self.params = params

    def points(self) -> list[RollbackPoint]:
        """List stored backups newest first; the live one marked, pre-rollback ones avoided."""
        backups = backup_store(self.params).list()
        current = _live_backup(backups)
        newest_undo = next((b.name for b in backups if b.restored), None)
        return [self._point(b, current=current, undo=b.name == newest_undo) for b in backups]

    def checks(self, ref: str | None) -> list[Check]:
        """Check the backup exists and is a whole, safe archive, and the directory exists."""
        live = Path(self.params.directory)
        checks = [Check("configuration directory exists", live.is_dir(), str(live))]
        try:
            name = self._resolve(ref)
        except PlanningError as exc:
            return [*checks, Check("backup exists", False, str(exc))]
        checks.append(Check("backup exists", True, backup_store(self.params).where(name)))
        try:
            members = self._verify(name)
        except ActionError as exc:
            return [*checks, Check("backup readable and safe", False, str(exc))]
        return [*checks, Check("backup readable and safe", True, f"{members} entries")]

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        """Back up, restore `ref` (None: the default point), restart; `force` changes nothing."""
        name = self._resolve(ref)
        try:
            self._verify(name)
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        has_restart = self.params.restart_command or self.params.restart_deployment
        verify = [RestartApp(self.params)] if has_restart or self.params.health_url else []
        notes = [] if has_restart else ["no restart configured: the app must reload by itself"]
        return TargetPlan(
            prepare=[BackupConfig(self.params, restoring=name)],
            rollback=[RestoreConfig(self.params, backup=name)],
            verify=list(verify),
            notes=notes,
        )

    def restore(self, name: str, spec: dict[str, Any]) -> Action:
        """Rebuild a backup, restore or restart step from its stored spec."""
        steps = (BackupConfig, RestoreConfig, RestorePreRollback, RestartApp)
        return rebuild_step(steps, "a config target", name, spec, params=self.params)

    def _verify(self, name: str) -> int:
        store = backup_store(self.params)
        with tempfile.TemporaryDirectory() as tmp:
            store.fetch(name, Path(tmp) / name)
            return verify_archive(
                Path(tmp) / name, label=store.where(name), limits=self.params.limits
            )

    def _resolve(self, ref: str | None) -> str:
        try:
            backups = backup_store(self.params).list()
        except ActionError as exc:
            raise PlanningError(str(exc)) from exc
        if ref is None:
            return self._default(backups)
        if ref not in {b.name for b in backups}:
            raise PlanningError(f"no backup {ref!r} in {self.params.backups}")
        return ref

    def _default(self, backups: list[Backup]) -> str:
        if not backups:
            raise PlanningError(f"no configuration backup in {self.params.backups}")
        current = _live_backup(backups)
        names = [b.name for b in backups]
        after = names[names.index(current) + 1 :] if current in names else names
        for name in after:
            if backup_is_plain(name, backups) and name != current:
                return name
        raise PlanningError(
            f"no backup in {self.params.backups} older than the live configuration other than "
            "the bot's own pre-rollback backups: choose one explicitly"
        )

    def _point(self, backup: Backup, *, current: str | None, undo: bool) -> RollbackPoint:
        size = f" · {backup.size / 1024:.1f} KiB" if backup.size is not None else ""
        label = f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC{size}"
        avoid = ""
        if backup.restored is not None:
            before = f"before the rollback to the backup of {backup.restored:%Y-%m-%d %H:%M:%S}"
            label = ("undo the last rollback: " if undo else "") + f"{label} · {before}"
            avoid = PRE_ROLLBACK
        if backup.name == current:
            label += " · live now"
        return RollbackPoint(
            ref=backup.name,
            label=label,
            created_at=backup.created_at,
            is_current=backup.name == current,
            avoid=avoid,
        )


def backup_is_plain(name: str, backups: list[Backup]) -> bool:
    """Say whether `name` is a backup other than the bot's pre-rollback ones."""
    return any(b.name == name and b.restored is None for b in backups)


def _live_backup(backups: list[Backup]) -> str | None:
    """Return the backup restored by the latest rollback, if nothing was backed up since."""
    if not backups or backups[0].restored is None:
        return None
    restored = backups[0].restored
    return next((b.name for b in backups if b.created_at == restored and b.restored is None), None)
