"""Database rollback: point-in-time recovery, backup restoration, migration rollback, verification."""

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


class VerificationQuery(Strict):
    """A query whose single row is posted as a table; `nonzero` columns must not be 0 or NULL."""

    name: str
    sql: str
    nonzero: list[str] = []


class RdsInstance(Strict):
    """An Amazon RDS instance restored with restore_db_instance_to_point_in_time."""

    instance_id: str
    instance_class: str | None = None
    aws: AwsConnection = AwsConnection()


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
