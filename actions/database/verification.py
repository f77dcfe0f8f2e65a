"""Verification queries: run read-only, post their single rows as one table, fail on zeros.

The queries come from the config (or the procedures' VoxFlow defaults), never from Slack.
Each runs in its own read-only transaction under a statement timeout; a failed check or a
query error fails the step, naming every failed check.
Against RDS the endpoint is looked up when the step runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from actions.base import PermanentError, StepContext, StepResult, TemporaryError
from actions.database.names import first_line
from actions.database.params import DatabaseConnection, RdsInstance, VerificationQuery
from actions.database.pgtools import (
    SWAP_KEY,
    connect,
    database_exists,
    maintenance,
    step_errors,
)
from actions.database.rds import describe_instance, rds_client, rds_errors

DEFAULT_VERIFICATION: tuple[VerificationQuery, ...] = (
    VerificationQuery(
        name="users",
        sql="SELECT COUNT(*) AS total_users,"
        " COUNT(*) FILTER (WHERE is_active = true) AS active_users,"
        " MAX(created_at) AS latest_user_created, MIN(created_at) AS earliest_user_created"
        " FROM users",
        nonzero=["total_users"],
    ),
    VerificationQuery(
        name="agents",
        sql="SELECT COUNT(*) AS total_agents, COUNT(DISTINCT user_id) AS users_with_agents,"
        " MAX(created_at) AS latest_agent_created FROM agents",
        nonzero=["total_agents"],
    ),
    VerificationQuery(
        name="campaigns",
        sql="SELECT COUNT(*) AS total_campaigns,"
        " COUNT(*) FILTER (WHERE status = 'active') AS active_campaigns,"
        " MAX(created_at) AS latest_campaign_created FROM campaigns",
        nonzero=["total_campaigns"],
    ),
    VerificationQuery(
        name="user_usage_tracking",
        sql="SELECT COUNT(*) AS total_usage_records, MAX(date) AS latest_usage_date,"
        " SUM(total_tokens) AS total_tokens_tracked FROM user_usage_tracking",
        nonzero=["total_usage_records"],
    ),
    VerificationQuery(
        name="user_api_keys",
        sql="SELECT COUNT(*) AS total_api_keys, COUNT(DISTINCT user_id) AS users_with_keys,"
        " COUNT(*) FILTER (WHERE is_active = true) AS active_keys FROM user_api_keys",
        nonzero=["total_api_keys"],
    ),
)


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render rows as a plain-text table with a header and a rule."""
    rows = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    return value.isoformat() if isinstance(value, datetime) else str(value)


def run_query(
    cur: psycopg.Cursor[Any], query: VerificationQuery
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Run one verification query: its table rows, and what failed (empty when it passed)."""
    try:
        cur.execute(query.sql.encode())
        row = cur.fetchone()
    except psycopg.Error as error:
        message = first_line(error)
        return [(query.name, "(error)", message)], [f"{query.name}: query failed: {message}"]
    if row is None or cur.description is None:
        return [(query.name, "(no row)", "")], [f"{query.name}: the query returned no row"]
    values = dict(zip([col.name for col in cur.description], row, strict=True))
    rows = [
        (query.name if i == 0 else "", col, _cell(v)) for i, (col, v) in enumerate(values.items())
    ]
    failures = [
        f"{query.name}: {col} is {_cell(values.get(col))}"
        if col in values
        else f"{query.name}: no column {col}"
        for col in query.nonzero
        if values.get(col) in (None, 0)
    ]
    return rows, failures


def run_verification(
    conn: DatabaseConnection, queries: Sequence[VerificationQuery], *, timeout: float
) -> tuple[str, list[str]]:
    """Run the queries read-only, one transaction each; return the table and the failures."""
    rows: list[tuple[str, str, str]] = []
    failures: list[str] = []
    with connect(conn, timeout=timeout) as pg, pg.cursor() as cur:
        cur.execute("SET default_transaction_read_only = on")
        cur.execute(sql.SQL("SET statement_timeout = {}").format(int(max(timeout, 1) * 1000)))
        for query in queries:
            got, failed = run_query(cur, query)
            rows += got
            failures += failed
    return render_table(("check", "column", "value"), rows), failures


@dataclass
class VerifyDatabase:
    """Run the verification queries and post their table; a failed check fails the step."""

    conn: DatabaseConnection
    queries: tuple[VerificationQuery, ...]
    timeout: float = 120.0
    rds: RdsInstance | None = None
    instance_id: str | None = None
    swapped_into: str | None = None
    """For the recovery database: the live name it is swapped into afterwards."""
    name = "database.verify"
    idempotent = True

    def describe(self) -> str:
        """Say where the queries run and what must hold."""
        names = ", ".join(q.name for q in self.queries)
        musts = [f"{q.name}.{col}" for q in self.queries for col in q.nonzero]
        where = (
            f"database {self.conn.dbname} of RDS instance {self.instance_id}"
            if self.instance_id
            else f"{self.conn.dbname} on {self.conn.host}:{self.conn.port}"
        )
        rule = f"; fail if {', '.join(musts)} is 0 or NULL" if musts else ""
        return f"Run the verification queries ({names}) on {where}{rule}, or if a query errors"

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step (queries come from the config)."""
        return {"database": self.conn.dbname, "instance_id": self.instance_id}

    def run(self, ctx: StepContext) -> StepResult:
        """Run every query, then fail naming each failed check."""
        if self._swapped_already(ctx):
            return StepResult(
                summary=f"{self.conn.dbname} was already verified and swapped in as "
                f"{self.swapped_into}",
                skipped=True,
            )
        conn = self._endpoint() if self.instance_id else self.conn
        with step_errors(f"connecting to {conn.dbname} on {conn.host}"):
            table, failures = run_verification(
                conn, self.queries, timeout=min(ctx.remaining(), 60.0)
            )
        for line in table.splitlines():
            ctx.emit(line)
        if failures:
            raise PermanentError("verification failed: " + "; ".join(failures) + "\n" + table)
        return StepResult(
            summary=f"{len(self.queries)} verification checks passed on {conn.dbname}", output=table
        )

    def _swapped_already(self, ctx: StepContext) -> bool:
        if self.swapped_into is None or not ctx.memory.get(SWAP_KEY.format(self.swapped_into)):
            return False
        with (
            step_errors("looking for the recovery database"),
            connect(maintenance(self.conn), timeout=min(ctx.remaining(), 10.0)) as pg,
        ):
            return not database_exists(pg, self.conn.dbname)

    def _endpoint(self) -> DatabaseConnection:
        assert self.rds is not None and self.instance_id is not None
        with rds_errors(f"looking up the endpoint of {self.instance_id}"):
            found = describe_instance(rds_client(self.rds.aws), self.instance_id)
        endpoint = (found or {}).get("Endpoint") or {}
        if "Address" not in endpoint:
            raise TemporaryError(f"RDS instance {self.instance_id} has no endpoint yet", delay=5)
        return self.conn.model_copy(
            update={"host": endpoint["Address"], "port": endpoint.get("Port", self.conn.port)}
        )
