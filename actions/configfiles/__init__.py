"""Configuration rollback: back up and restore a configuration directory from tar.gz archives.

Modules: `params` (the target's parameters), `stores` (backups in a local
directory or under an S3 prefix), `archives` (archive safety checks and limits,
the exact extraction, and the directory or mount-point swap), `steps` (back up,
restore, restart with health polling), `target` (ConfigFilesTarget). Each
module's docstring gives its design reasoning.
"""

from actions.configfiles.archives import Limits, verify_archive
from actions.configfiles.params import ConfigFilesParams, RestartDeployment
from actions.configfiles.steps import (
    PRE_BACKUP_KEY,
    BackupConfig,
    RestartApp,
    RestoreConfig,
    restart_key,
    restore_key,
)
from actions.configfiles.stores import Backup, backup_name, backup_store, restored_time
from actions.configfiles.target import ConfigFilesTarget

__all__ = [
    "PRE_BACKUP_KEY",
    "Backup",
    "BackupConfig",
    "ConfigFilesParams",
    "ConfigFilesTarget",
    "Limits",
    "RestartApp",
    "RestartDeployment",
    "RestoreConfig",
    "backup_name",
    "backup_store",
    "restart_key",
    "restore_key",
    "restored_time",
    "verify_archive",
]
