"""The swap changes the data and nothing else of the database; blockers are ended and listed."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from actions.base import PermanentError, StepContext
from actions.database import RECOVERY_MARKER, DatabaseTarget, SwapDatabases, VerificationQuery
from actions.database.properties import split_guc_list
from tests.fakes.pg import connection, dump, execute, params, pg, run_plan, scalar
from tests.fakes.pgcluster import give_to_postgres

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)

STATE = """
SELECT json_build_object(
  'owner', pg_get_userbyid(d.datdba),
  'acl', (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(d.datacl) a),
  'settings', (SELECT json_agg(json_build_object('role', pg_get_userbyid(s.setrole),
                'config', s.setconfig) ORDER BY s.setrole)
               FROM pg_db_role_setting s WHERE s.setdatabase = d.oid),
  'comment', shobj_description(d.oid, 'pg_database'),
  'limit', d.datconnlimit)::text
FROM pg_database d WHERE d.datname = %s
"""

INSIDE = """
SELECT json_build_object(
  'extensions', (SELECT json_agg(extname || ' ' || extversion ORDER BY extname) FROM pg_extension),
  'default_acl', (SELECT json_agg(pg_get_userbyid(defaclrole) || ' ' || defaclobjtype::text || ' '
                  || defaclacl::text) FROM pg_default_acl))::text
"""


def clock() -> datetime:
    """Return the fixed test time."""
    return NOW


def state(db: str) -> tuple[str, str]:
    """Read everything of a database but its data: shared catalogs, then its own."""
    with pg() as conn:
        row = conn.execute(STATE, (db,)).fetchone()
    shared = row[0] if row else ""
    return shared, scalar(db, INSIDE)


@pytest.fixture
def dressed_db(pg_role: str, voxflow_db: str, tmp_path: Path) -> str:
    """A live database with an owner, grants, settings, a comment, a limit and extensions.

    The dump is taken halfway: hstore 1.8 and a default privilege come after it, so the
    swap has to bring them onto the restored database.
    """
    db, role = voxflow_db, pg_role
    execute(
        "postgres",
        f'ALTER DATABASE "{db}" OWNER TO "{role}";'
        f'REVOKE CONNECT, TEMPORARY ON DATABASE "{db}" FROM PUBLIC;'
        f'GRANT CONNECT ON DATABASE "{db}" TO "{role}" WITH GRANT OPTION;'
        f"ALTER DATABASE \"{db}\" SET statement_timeout = '15s';"
        f'ALTER DATABASE "{db}" SET search_path = app, "My Schema", public;'
        f'ALTER ROLE "{role}" IN DATABASE "{db}" SET work_mem = \'8MB\';'
        f"COMMENT ON DATABASE \"{db}\" IS 'VoxFlow production';"
        f'ALTER DATABASE "{db}" CONNECTION LIMIT 50',
    )
    execute(db, "CREATE EXTENSION hstore VERSION '1.7'; CREATE SCHEMA app")
    dump(db, tmp_path, NOW - timedelta(hours=1))
    execute(
        db,
        "ALTER EXTENSION hstore UPDATE TO '1.8';"
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO "{role}";'
        "INSERT INTO users (email) VALUES ('after@example.com')",
    )
    return db


def test_swap_keeps_everything_of_the_database_but_its_data(
    dressed_db: str, tmp_path: Path
) -> None:
    before = state(dressed_db)
    tgt = DatabaseTarget(params(dressed_db, backups=str(tmp_path)), now=clock)

    results = run_plan(tgt.plan(None))

    swapped = results[2]
    aside = swapped.data["aside"]
    assert state(dressed_db) == before
    assert scalar(dressed_db, "SELECT count(*) FROM users") == 3
    assert scalar(aside, "SELECT count(*) FROM users") == 4
    assert "default privileges" in swapped.output
    comment = scalar(
        "postgres",
        f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{aside}'",
    )
    assert comment.startswith(f"rollback-bot: this was {dressed_db} until 2026-01-10T12:00:00")
    assert "its comment was: VoxFlow production" in comment
    assert RECOVERY_MARKER not in (before[0] + state(dressed_db)[0])


def test_public_keeps_its_revoked_connect_after_the_swap(dressed_db: str, tmp_path: Path) -> None:
    run_plan(DatabaseTarget(params(dressed_db, backups=str(tmp_path)), now=clock).plan(None))

    public_can = scalar(
        "postgres", f"SELECT has_database_privilege('public', '{dressed_db}', 'CONNECT')"
    )
    setting = scalar(dressed_db, "SHOW search_path")

    assert public_can is False
    assert setting == 'app, "My Schema", public'


def test_list_settings_split_like_pg_dumpall() -> None:
    assert split_guc_list('app, "My Schema", public') == ["app", "My Schema", "public"]
    assert split_guc_list('"a""b",c') == ['a"b', "c"]
    assert split_guc_list("") == []


@pytest.fixture
def recovery_of(voxflow_db: str) -> str:
    """Make `<db>_recovery`, marked as the bot's, as a copy with one user less."""
    recovery = f"{voxflow_db}_recovery"
    execute("postgres", f'CREATE DATABASE "{recovery}" TEMPLATE "{voxflow_db}"')
    execute(recovery, "DELETE FROM users WHERE id = 3")
    execute("postgres", f"COMMENT ON DATABASE \"{recovery}\" IS '{RECOVERY_MARKER}'")
    return recovery


@pytest.fixture
def idle_in_transaction(voxflow_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A session idle in a transaction that holds a row lock and a table lock."""
    session = psycopg.connect(
        host="127.0.0.1", user="postgres", dbname=voxflow_db, application_name="stuck-worker"
    )
    session.execute("SELECT * FROM users WHERE id = 1 FOR UPDATE")
    session.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
    yield session
    session.close()


def test_an_idle_in_transaction_session_is_ended_and_listed(
    voxflow_db: str, recovery_of: str, idle_in_transaction: psycopg.Connection[Any]
) -> None:
    pid = idle_in_transaction.info.backend_pid
    lines: list[str] = []
    swap = SwapDatabases(connection(voxflow_db), recovery_of, 20.0, clock)

    result = swap.run(StepContext.for_test(timeout=20.0, emit=lines.append))

    ended = f"pid {pid} · user postgres · application stuck-worker · idle in transaction"
    assert any(ended in line for line in lines)
    assert ended in result.output
    assert result.data["sessions"][0].startswith(ended)
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 2
    with pytest.raises(psycopg.OperationalError):
        idle_in_transaction.execute("SELECT 1")


def test_a_session_that_keeps_coming_back_stops_the_swap_after_bounded_attempts(
    voxflow_db: str, recovery_of: str
) -> None:
    blocker = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    blocker.execute(f"COMMENT ON DATABASE \"{voxflow_db}\" IS 'busy'".encode())
    swap = SwapDatabases(
        connection(voxflow_db),
        recovery_of,
        30.0,
        clock,
        retry_delay=0.01,
        lock_wait=0.1,
        max_attempts=3,
    )
    lines: list[str] = []
    try:
        with pytest.raises(PermanentError, match="after 3 attempts") as stopped:
            swap.run(StepContext.for_test(timeout=30.0, emit=lines.append))
    finally:
        blocker.rollback()
        blocker.close()

    assert "is unchanged and open again" in str(stopped.value)
    assert sum("retrying" in line for line in lines) == 2
    assert scalar(voxflow_db, "SELECT count(*) FROM users") == 3
    assert scalar(
        voxflow_db, "SELECT datallowconn FROM pg_database WHERE datname = current_database()"
    )


WORDS = "('B'), ('a'), ('af'), ('ä'), ('ae'), ('z')"
PHONEBOOK = ["a", "ae", "ä", "af", "B", "z"]
"""German phone-book order (ICU de-u-co-phonebk: ä sorts as ae); C.UTF-8 gives B a ae af z ä."""

SHAPE = """
SELECT d.datlocprovider::text, d.daticulocale, d.datcollate, t.spcname
FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s
"""


def shape(db: str) -> tuple[str, ...]:
    """Read a database's locale provider, ICU locale, LC_COLLATE and tablespace."""
    with pg() as conn:
        row = conn.execute(SHAPE, (db,)).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def tablespace() -> Iterator[str]:
    """A tablespace in a temporary directory owned by the server's OS user."""
    name, path = f"rbt_ts_{uuid.uuid4().hex[:8]}", Path(tempfile.mkdtemp(prefix="rbt_ts_"))
    give_to_postgres(path)
    execute("postgres", f"CREATE TABLESPACE \"{name}\" LOCATION '{path}'")
    yield name
    with pg() as conn:
        for (db,) in conn.execute(
            "SELECT d.datname FROM pg_database d JOIN pg_tablespace t"
            " ON t.oid = d.dattablespace WHERE t.spcname = %s",
            (name,),
        ).fetchall():
            conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)'.encode())
        conn.execute(f'DROP TABLESPACE "{name}"'.encode())
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def phonebook_db(tablespace: str, tmp_path: Path) -> Iterator[str]:
    """A database with the ICU locale de-u-co-phonebk in its own tablespace, dumped, then
    written to after the dump; dropped afterwards with its kin wherever they are (a test's
    `<db>_recovery` in the default tablespace, which the tablespace's teardown does not see)."""
    db = f"rbt_{uuid.uuid4().hex[:12]}"
    execute(
        "postgres",
        f"CREATE DATABASE \"{db}\" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu"
        f" ICU_LOCALE 'de-u-co-phonebk' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        f' TABLESPACE "{tablespace}"',
    )
    execute(db, f"CREATE TABLE names (name text PRIMARY KEY); INSERT INTO names VALUES {WORDS}")
    dump(db, tmp_path, NOW - timedelta(hours=1))
    execute(db, "INSERT INTO names VALUES ('after the dump')")
    yield db
    with pg() as conn:
        for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (db,)
        ).fetchall():
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def test_a_database_with_an_icu_locale_in_its_own_tablespace_comes_back_with_both(
    phonebook_db: str, tablespace: str, tmp_path: Path
) -> None:
    before = shape(phonebook_db)
    names_query = VerificationQuery(name="names", sql="SELECT count(*) AS n FROM names")
    tgt = DatabaseTarget(
        params(phonebook_db, backups=str(tmp_path), verification=[names_query]), now=clock
    )
    plan = tgt.plan(None)

    results = run_plan(plan)

    aside = results[2].data["aside"]
    assert before == ("i", "de-u-co-phonebk", "C.UTF-8", tablespace)
    assert shape(phonebook_db) == before
    assert shape(aside) == before
    with pg(phonebook_db) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM names ORDER BY name")]
        libc = [r[0] for r in conn.execute('SELECT name FROM names ORDER BY name COLLATE "C"')]
    assert names == PHONEBOOK
    assert libc != PHONEBOOK
    assert "locale provider and locales, tablespace" in plan.stage[0].describe()


def test_the_swap_refuses_a_recovery_database_with_another_locale(
    phonebook_db: str, tablespace: str
) -> None:
    recovery = f"{phonebook_db}_recovery"
    execute("postgres", f'CREATE DATABASE "{recovery}" TEMPLATE template0')
    execute("postgres", f"COMMENT ON DATABASE \"{recovery}\" IS '{RECOVERY_MARKER}'")
    swap = SwapDatabases(connection(phonebook_db), recovery, 20.0, clock)

    with pytest.raises(PermanentError, match="Nothing was renamed") as refused:
        swap.run(StepContext.for_test(timeout=20.0))

    assert (
        f"icu de-u-co-phonebk (LC_COLLATE C.UTF-8, LC_CTYPE C.UTF-8), tablespace {tablespace}"
        in str(refused.value)
    )
    assert "libc (LC_COLLATE C.UTF-8, LC_CTYPE C.UTF-8), tablespace pg_default" in str(
        refused.value
    )
    assert scalar(phonebook_db, "SELECT count(*) FROM names") == 7
