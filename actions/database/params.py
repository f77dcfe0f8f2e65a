"""The database target's config models: the server, allowed methods, verification, RDS.

Models forbid unknown keys (`Strict`), so a typo in the config file is an error;
the password is a `SecretRef`, never a value in the config itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, model_validator

from actions.params import AwsConnection, SecretRef, Strict, seconds_of


def duration(value: Any) -> Any:
    """Read `90s`, `30m`, `1h`, `2d`, `1w` (or seconds as a number) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=seconds_of(value))


Duration = Annotated[timedelta, BeforeValidator(duration)]


class DatabaseConnection(Strict):
    """Where the target PostgreSQL is; the password comes from the environment or a file."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str
    password: SecretRef | None = None
    sslmode: str | None = None
    maintenance_dbname: str = "postgres"


class VerificationQuery(Strict):
    """A query whose single row is posted as a table; `nonzero` columns must not be 0 or NULL."""

    name: str
    sql: str
    nonzero: list[str] = []


class RdsInstance(Strict):
    """An Amazon RDS instance restored with restore_db_instance_to_point_in_time.

    `verify`: run the verification queries against the restored and the live endpoints
    (needs the endpoints reachable from the bot; off for moto).
    `cluster_id`: an Aurora cluster, restored with the cluster API; `instance_id` is then its
    writer instance, recreated in the restored cluster with the same settings.
    """

    instance_id: str
    cluster_id: str | None = None
    instance_class: str | None = None
    aws: AwsConnection = AwsConnection()
    verify: bool = True
    poll_interval: float = 15.0


class Scratch(Strict):
    """Where and as whom the scratch instance of a point-in-time recovery runs.

    `directory`: parent of the scratch data directory (default: the system's temp directory);
    it needs room for a copy of the whole cluster. `run_as`: the OS user that owns the
    backups and runs PostgreSQL (needed when the bot runs as root, which PostgreSQL refuses);
    None: the bot's own user, or `postgres` when the bot is root. `bindir`: PostgreSQL's
    binaries (default: `pg_config --bindir`).
    """

    directory: str | None = None
    run_as: str | None = None
    bindir: str | None = None


class WalArchive(Scratch):
    """PostgreSQL's own continuous archiving: base backups plus a WAL archive directory.

    `base_backups`: a directory with one plain-format `pg_basebackup -D` output per
    subdirectory. `wal_archive`: where `archive_command` copies finished segments (and the
    `.backup` history files that give each base backup's stop time). Restores use
    `restore_command = 'cp "<wal_archive>/%f" "%p"'`.
    """

    base_backups: str
    wal_archive: str


class PgBackRest(Scratch):
    """A pgBackRest stanza; restores run `pgbackrest restore --type=time` into scratch."""

    stanza: str
    config: str | None = None


Method = Literal["pitr", "backup", "migration"]


class DatabaseParams(Strict):
    """A database and the rollback methods allowed for it.

    `backups`: directory of pg_dump custom-format files (`<dbname>_<YYYYmmdd_HHMMSS>.dump`).
    `migrations`: the migration tool's directory: `rollback_<version>.sql` (the procedures'
    format, Supabase CLI), `<version>_<name>.down.sql` (golang-migrate), `U<version>__<name>.sql`
    (Flyway undo). The tool is detected from its table (`migrations_table` picks one when
    several exist). `alembic_command` (e.g. `["alembic", "-c", "alembic.ini"]`, run in
    `alembic_directory`): how Alembic downgrades, since its revisions are Python.
    `verification`: None means the procedures' VoxFlow queries.
    `rds`, `archive`, `pgbackrest`: where point-in-time recovery comes from (at most one);
    with none, only dumps exist and no point in time is offered.
    `rpo`: the recovery-point objective (`1h`): the reversibility verdict calls a rollback
    risky when the newest usable backup (or the WAL archive's end) is older than this.
    `recovery_target_inclusive`: a transaction committed exactly at the chosen time is kept
    (True, PostgreSQL's default) or left out.
    """

    kind: Literal["database"]
    connection: DatabaseConnection
    methods: list[Method] = ["backup"]
    backups: str | None = None
    migrations: str | None = None
    migrations_table: str = "schema_migrations"
    alembic_command: list[str] | None = None
    alembic_directory: str | None = None
    rds: RdsInstance | None = None
    archive: WalArchive | None = None
    pgbackrest: PgBackRest | None = None
    recovery_target_inclusive: bool = True
    rpo: Duration | None = None
    verification: list[VerificationQuery] | None = None
    restore_jobs: int = 2
    restore_timeout: float = 3600.0
    swap_timeout: float = 120.0

    @model_validator(mode="after")
    def _one_pitr_source(self) -> DatabaseParams:
        given = [n for n in ("rds", "archive", "pgbackrest") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one point-in-time source, not {' and '.join(given)}")
        return self
