"""Configuration rollback: back up and restore a configuration directory from tar.gz archives.

Modules: `params` (the target's parameters), `stores` (backups in a local
directory or under an S3 prefix), `archives` (archive safety checks and limits,
the exact extraction, and the directory or mount-point swap), `steps` (back up,
restore, restart with health polling), `target` (ConfigFilesTarget). Each
module's docstring gives its design reasoning.

Only the light `params` module is imported with the package; every other name
is imported where it is first used (`actions.exports.lazy`), so reading the
config file imports no client (issue 16, point 6).
"""

from typing import TYPE_CHECKING

from actions.configfiles.params import PRE_BACKUP_KEY, ConfigFilesParams, RestartDeployment
from actions.exports import lazy

if TYPE_CHECKING:
    from actions.configfiles.archives import Limits, verify_archive
    from actions.configfiles.steps import (
        BackupConfig,
        RestartApp,
        RestoreConfig,
        restart_key,
        restore_key,
    )
    from actions.configfiles.stores import Backup, backup_name, backup_store, restored_time
    from actions.configfiles.target import ConfigFilesTarget

__getattr__ = lazy(
    __name__,
    {
        "Limits": "archives",
        "verify_archive": "archives",
        "BackupConfig": "steps",
        "RestartApp": "steps",
        "RestoreConfig": "steps",
        "restart_key": "steps",
        "restore_key": "steps",
        "Backup": "stores",
        "backup_name": "stores",
        "backup_store": "stores",
        "restored_time": "stores",
        "ConfigFilesTarget": "target",
    },
)

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
