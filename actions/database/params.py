"""The database target's config models: the server, allowed methods, verification, RDS.

Models forbid unknown keys (`Strict`), so a typo in the config file is an error;
the password is a `SecretRef`, never a value in the config itself.
"""

from __future__ import annotations

from typing import Literal

from actions.params import AwsConnection, SecretRef, Strict


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
    """

    instance_id: str
    instance_class: str | None = None
    aws: AwsConnection = AwsConnection()
    verify: bool = True
    poll_interval: float = 15.0


Method = Literal["pitr", "backup", "migration"]


class DatabaseParams(Strict):
    """A database and the rollback methods allowed for it.

    `backups`: directory of pg_dump custom-format files (`<dbname>_<YYYYmmdd_HHMMSS>.dump`).
    `migrations`: directory holding `<version>_*.sql` and `rollback_<version>.sql`.
    `verification`: None means the procedures' VoxFlow queries.
    """

    kind: Literal["database"]
    connection: DatabaseConnection
    methods: list[Method] = ["backup"]
    backups: str | None = None
    migrations: str | None = None
    migrations_table: str = "schema_migrations"
    rds: RdsInstance | None = None
    verification: list[VerificationQuery] | None = None
    restore_jobs: int = 2
    restore_timeout: float = 3600.0
    swap_timeout: float = 120.0
