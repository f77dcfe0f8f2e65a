"""The bot's own database: engines, schema migrations, sessions and the shared clock.

Every repository (`bot.persistence.runs`, `.incidents`, `.outbox`…) opens its sessions
here. A session joins the thread's unit of work when one is open (`Database.unit`): the
repositories' writes then commit together, once, or not at all (each call in its own
SAVEPOINT, so a call that fails on a key, like a lost race for a target, undoes only
itself). Outside a unit each call is its own transaction.
"""

from __future__ import annotations

import ast
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, create_engine, event, func, inspect, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bot.persistence.models import Run

Clock = Callable[[], datetime]
Row = TypeVar("Row")
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class SchemaOutOfDate(RuntimeError):
    """The database schema is missing or older than this code."""


class Conflict(RuntimeError):
    """The row changed under us (state or version no longer as expected)."""


READ_ONLY = "rollback_bot_read_only"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and immediate write transactions.

    SQLite as an embedded default that holds: in WAL mode
    readers read a snapshot while one writer appends, so a session opened for
    reads (`Database.reading`, the engine option READ_ONLY) starts a plain
    deferred `BEGIN` and never waits on another session. A session that may
    write starts `BEGIN IMMEDIATE`, taking the write lock first, so two writers
    queue on the busy timeout (30 s) instead of failing "database is locked"
    when a deferred reader tries to upgrade. The runner's fenced writes stay
    conditional UPDATEs inside those write transactions.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_begin(connection: Any) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA foreign_keys=ON")
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def _alembic_config(connection: Any) -> Any:
    # alembic is imported where it is used: most processes never migrate.
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Create or upgrade the schema to `revision` (the newest); return the newest revision."""
    from alembic import command

    _migrate(engine, lambda config: command.upgrade(config, revision))
    return schema_revisions(engine)[1]


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision`, carrying the rows back with it."""
    from alembic import command

    _migrate(engine, lambda config: command.downgrade(config, revision))


def _migrate(engine: Engine, step: Callable[[Any], None]) -> None:
    """Run migrations in one transaction; on SQLite with foreign keys unenforced meanwhile.

    SQLite changes a table's constraints by copying it (alembic's batch mode), and dropping
    a table other tables point to fails while foreign keys are enforced. SQLite's own
    procedure (https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of Table
    Schema Changes") turns enforcement off outside the transaction, checks the keys with
    `PRAGMA foreign_key_check` before committing, and turns it back on.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw: Any = connection.connection.driver_connection
        if sqlite:  # outside any transaction: the pragma is a no-op inside one
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                step(_alembic_config(connection))
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """Return (the database's revision, this code's newest revision).

    Read without alembic, which imports every SQL dialect it knows (PostgreSQL's
    with psycopg's helpers), a large share of a serving bot's start-up
    (docs/benchmarks.md, start-up imports): the database's revision is
    alembic's own `alembic_version` row, the newest is the one revision no
    migration file names as its `down_revision`.
    tests/perf/test_cli_imports.py checks both against alembic's answers.
    """
    head = head_revision()
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None, head
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        current = sorted(rows)
    return (current[0] if len(current) == 1 else None), head


_HEADS: dict[Path, str] = {}
_HEADS_LOCK = threading.Lock()


def head_revision(versions: Path = MIGRATIONS / "versions") -> str:
    """This code's newest schema revision, from the migration files' `revision` lines.

    Read once per process (the files ship with the code) and under a lock: `/readyz` asks
    on every probe, and CPython 3.11's parser keeps one recursion counter per interpreter,
    so two threads in `ast.parse` at once can fail with "AST constructor recursion depth
    mismatch" (seen in the tests, on 3.11.7)."""
    with _HEADS_LOCK:
        if versions not in _HEADS:
            _HEADS[versions] = _head_of(versions)
        return _HEADS[versions]


def _head_of(versions: Path) -> str:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        assigned = _literals(path, ("revision", "down_revision"))
        if "revision" not in assigned:
            continue
        revisions.add(str(assigned["revision"]))
        down = assigned.get("down_revision")
        parents.update([down] if isinstance(down, str) else list(down or ()))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise RuntimeError(f"the migrations in {versions} have heads {heads}, not one")
    return heads[0]


def _literals(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The literal values assigned at a module's top level to `names`, without running it."""
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names and node.value:
                    found[target.id] = ast.literal_eval(node.value)
    return found


def require_current_schema(engine: Engine) -> None:
    """Raise SchemaOutOfDate, saying which command fixes it, unless the schema is current."""
    current, head = schema_revisions(engine)
    if current != head:
        found = "no schema" if current is None else f"schema revision {current}"
        raise SchemaOutOfDate(
            f"the database has {found}, this bot needs {head}: run `rollback-bot db upgrade` first"
        )


class Database:
    """Sessions on the bot's database, the thread's unit of work, and the agreed clock."""

    OFFSET_SECONDS = 300.0
    """How long a measured offset between this process's clock and the database's is used."""

    FREE_BYTES = 1 << 20
    """Below this much free space on a SQLite file's filesystem the database counts as full."""

    def __init__(
        self, engine: Engine, *, clock: Clock | None = None, process_clock: Clock = utcnow
    ) -> None:
        self.engine = engine
        self.process_clock = process_clock
        self.clock: Clock = clock or self._agreed
        """The one clock every replica shares (`_agreed`); a test passes one it moves by hand."""
        self._offset: tuple[float, timedelta] | None = None
        self._offset_lock = threading.Lock()
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        reader = engine.execution_options(**{READ_ONLY: True})
        self._readers = sessionmaker(reader, expire_on_commit=False)
        self._local = threading.local()

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One transaction for every repository call this thread makes inside the block.

        It commits when the block ends and rolls back, whole, when it raises: a use case
        (opening an incident: request, run, review, versions, verdicts, events) is seen by
        other sessions, the runner's among them, complete or not at all. Units nest: an
        inner one joins the outer.
        """
        if self._current() is not None:
            yield
            return
        with self._sessions.begin() as session:
            self._local.session = session
            try:
                yield
            finally:
                self._local.session = None

    def _current(self) -> Session | None:
        session: Session | None = getattr(self._local, "session", None)
        return session

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a session whose transaction commits on success (on SQLite: BEGIN IMMEDIATE).

        Inside a unit of work: the unit's session, in a SAVEPOINT of its own.
        """
        current = self._current()
        if current is not None:
            with current.begin_nested():
                yield current
            return
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Open a session for reads only: on SQLite a plain (deferred) BEGIN.

        In WAL mode a deferred read transaction reads a snapshot and takes no
        write lock, so reads never wait on each other or on a writer, and a
        long read never blocks a writer (`make_engine`). Inside a unit of work:
        the unit's session, which sees the unit's own writes.
        """
        current = self._current()
        if current is not None:
            yield current
            return
        with self._readers.begin() as session:
            yield session

    def unwritable(self) -> str | None:
        """Say why the bot's database cannot take a write now; None when it can.

        A write probe in a transaction that is rolled back: an UPDATE of no row is refused by
        a read-only PostgreSQL (`default_transaction_read_only`, a hot standby) and, through
        BEGIN IMMEDIATE, by a SQLite file that cannot be written. A rolled-back write never
        reaches SQLite's disk, so a SQLite file's filesystem is also checked for space.
        """
        try:
            with self.engine.connect() as connection, connection.begin() as transaction:
                connection.execute(update(Run).where(Run.id.is_(None)).values(version=Run.version))
                transaction.rollback()
        except Exception as exc:
            return f"the bot's database cannot be written: {type(exc).__name__}: {exc}"[:300]
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        if path and path != ":memory:":
            free = shutil.disk_usage(Path(path).resolve().parent).free
            if free < self.FREE_BYTES:
                return f"the bot's database disk is full ({free} bytes free)"
        return None

    def _agreed(self) -> datetime:
        """The time every replica agrees on: this process's clock corrected to the database's.

        Deadlines written by one replica and compared by another (request expiry, veto
        windows, approvals' age, outbox claims, re-check schedules) and the times of the
        records people read across replicas all come from `clock`, so a replica whose own
        clock is off by minutes neither expires a request at once nor takes a message
        another sender still holds. The offset to the database's clock is measured with
        one query, in a transaction of its own (PostgreSQL's `now()` is the time its
        transaction began), and re-measured every `OFFSET_SECONDS` (leases compare on the
        database directly, `db_now`).
        """
        with self._offset_lock:
            if self._offset is None or time.monotonic() - self._offset[0] > self.OFFSET_SECONDS:
                try:
                    with self._readers.begin() as session:
                        raw = session.scalar(select(self.db_now()))
                except Exception:
                    if self._offset is None:
                        raise
                    # the database is away: the last offset stays good (clocks drift slowly),
                    # so a runner can still stamp a step's end it is waiting to write
                    return self.process_clock() + self._offset[1]
                db = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
                self._offset = (time.monotonic(), db.replace(tzinfo=UTC) - self.process_clock())
            return self.process_clock() + self._offset[1]

    def db_now(self, seconds: float = 0.0) -> Any:
        """The database's current UTC time plus `seconds`, as stored (naive UTC)."""
        if self.engine.dialect.name == "sqlite":
            # '%f' gives SS.SSS; three more zeros match SQLAlchemy's stored format exactly,
            # so the text comparison with stored values is a time comparison.
            return func.strftime("%Y-%m-%d %H:%M:%f", "now", f"{seconds:+.3f} seconds").concat(
                "000"
            )
        now = func.timezone("UTC", func.now())
        return now + func.make_interval(0, 0, 0, 0, 0, 0, seconds) if seconds else now


def narrowed(query: Select[Row], **given: tuple[Any, Any]) -> Select[Row]:
    """`query` narrowed to each given (column, value): equal to it, or in it for a tuple;
    a value of None leaves its column unfiltered."""
    for column, value in given.values():
        if value is not None:
            query = query.where(column.in_(value) if isinstance(value, tuple) else column == value)
    return query


class Repository:
    """Rows of one aggregate, read and written through the shared `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
