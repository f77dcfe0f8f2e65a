"""Verification queries: the procedures' defaults as a table, failures that name their check."""

from __future__ import annotations

import re

import pytest

from actions.base import PermanentError, StepContext
from actions.database import (
    DEFAULT_VERIFICATION,
    DatabaseTarget,
    VerificationQuery,
    VerifyDatabase,
    render_table,
)
from tests.fakes.pg import connection, execute, params, scalar

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres


def verify(
    db: str, queries: tuple[VerificationQuery, ...] = DEFAULT_VERIFICATION
) -> VerifyDatabase:
    """Build the verification step for a test database."""
    return VerifyDatabase(connection(db), queries)


def test_default_checks_post_a_table_of_counts_without_key_values(voxflow_db: str) -> None:
    lines: list[str] = []

    result = verify(voxflow_db).run(StepContext.for_test(emit=lines.append))

    assert result.summary.startswith("5 verification checks passed")
    for name in ("users", "agents", "campaigns", "user_usage_tracking", "user_api_keys"):
        assert name in result.output
    assert re.search(r"^users +total_users +3$", result.output, re.MULTILINE)
    assert "SECRET" not in result.output
    assert lines == result.output.splitlines()


def test_a_count_dropped_to_zero_fails_naming_the_check(voxflow_db: str) -> None:
    execute(voxflow_db, "DELETE FROM campaigns")

    with pytest.raises(PermanentError, match="campaigns: total_campaigns is 0"):
        verify(voxflow_db).run(StepContext.for_test())


def test_a_query_error_fails_naming_the_check_and_the_others_still_run(voxflow_db: str) -> None:
    execute(voxflow_db, "DROP TABLE user_api_keys")
    lines: list[str] = []

    with pytest.raises(PermanentError, match="user_api_keys: query failed: relation") as failure:
        verify(voxflow_db).run(StepContext.for_test(emit=lines.append))

    assert "total_campaigns" in str(failure.value)
    assert any("(error)" in line for line in lines)


def test_a_null_nonzero_column_fails(voxflow_db: str) -> None:
    query = VerificationQuery(
        name="latest",
        sql="SELECT MAX(created_at) AS newest FROM users WHERE false",
        nonzero=["newest"],
    )

    with pytest.raises(PermanentError, match="latest: newest is NULL"):
        verify(voxflow_db, (query,)).run(StepContext.for_test())


def test_verification_runs_read_only(voxflow_db: str) -> None:
    query = VerificationQuery(name="sneaky", sql="DELETE FROM users RETURNING 1 AS one")

    with pytest.raises(PermanentError, match="sneaky: query failed: cannot execute DELETE"):
        verify(voxflow_db, (query,)).run(StepContext.for_test())
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3


def test_configured_queries_replace_the_defaults(voxflow_db: str) -> None:
    custom = [VerificationQuery(name="agents only", sql="SELECT count(*) AS n FROM agents")]
    tgt = DatabaseTarget(params(voxflow_db, verification=custom))

    assert tgt.queries == tuple(custom)
    assert DatabaseTarget(params(voxflow_db)).queries == DEFAULT_VERIFICATION


def test_describe_names_the_database_and_what_must_hold(voxflow_db: str) -> None:
    text = verify(voxflow_db).describe()

    assert f"{voxflow_db} on 127.0.0.1:5432" in text
    assert "users.total_users" in text


def test_render_table_aligns_columns() -> None:
    table = render_table(("a", "bb"), [("long value", "x")])

    assert table.splitlines() == ["a           bb", "----------  --", "long value  x"]
