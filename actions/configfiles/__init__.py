"""Configuration rollback: back up and restore a configuration directory from tar.gz archives.

Modules: `params` (the target's parameters), `stores` (backups in a local
directory or under an S3 prefix), `archives` (archive safety checks and the
extract-and-swap restore), `steps` (back up, restore, restart with health
polling), `target` (ConfigFilesTarget). Each module's docstring gives its
design reasoning.
"""

from actions.configfiles.archives import restore_directory, verify_archive
from actions.configfiles.params import ConfigFilesParams, RestartDeployment
from actions.configfiles.steps import PRE_BACKUP_KEY, BackupConfig, RestartApp, RestoreConfig
from actions.configfiles.stores import Backup, backup_name, backup_store
from actions.configfiles.target import ConfigFilesTarget

__all__ = [
    "PRE_BACKUP_KEY",
    "Backup",
    "BackupConfig",
    "ConfigFilesParams",
    "ConfigFilesTarget",
    "RestartApp",
    "RestartDeployment",
    "RestoreConfig",
    "backup_name",
    "backup_store",
    "restore_directory",
    "verify_archive",
]
