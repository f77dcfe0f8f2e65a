"""The bot's own database for tests: a fresh PostgreSQL database, empty or from a template."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database(prefix: str = "rbtest", *, template: str | None = None) -> Iterator[str]:
    """Create a PostgreSQL database (empty, or a copy of `template`); yield its SQLAlchemy URL;
    drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
