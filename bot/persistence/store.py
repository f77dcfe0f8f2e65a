"""The only module that opens sessions on the bot's own database.

Functions here are thin: they read and write rows and keep each state change
atomic with its audit event. Rules (who may approve, what expires) live in
`bot/execution/workflow.py`; this module only guarantees that a change happens once.

A transition is a conditional UPDATE on (id, state, version). Zero rows
updated means somebody else changed the run first; the caller re-reads and
decides. That works the same on SQLite and PostgreSQL.

Runs are executed under fenced leases (see the leases section): timed on the
database's clock, a new token per claim, and every write a runner makes about
its run conditional on that token. Claiming uses FOR UPDATE SKIP LOCKED on
PostgreSQL, so runners in several processes share the work; SQLite, the
embedded default, is for one bot process.
"""

from __future__ import annotations

import ast
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.domain.states import (
    EXECUTABLE_STATES,
    TERMINAL_STATES,
    RecheckState,
    RunState,
    StepState,
    VersionState,
)
from bot.domain.versions import KnownVersions, VersionNote, version_key
from bot.persistence.models import (
    Approval,
    BreakGlassReview,
    Drill,
    EntryKey,
    Event,
    Incident,
    OutboxMessage,
    Recheck,
    Run,
    SlackMessage,
    StepRecord,
    SyncResume,
    TargetLock,
    TargetVersion,
)

Clock = Callable[[], datetime]
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class SchemaOutOfDate(RuntimeError):
    """The database schema is missing or older than this code."""


class TargetBusy(RuntimeError):
    """Another active run holds the target."""

    def __init__(self, *, environment: str, target: str, incident_id: str) -> None:
        self.incident_id = incident_id
        super().__init__(
            f"{target} in {environment} is already being rolled back in {incident_id}; "
            "finish or cancel that one first"
        )


class Conflict(RuntimeError):
    """The run changed under us (state or version no longer as expected)."""


@dataclass(frozen=True)
class Lease:
    """A runner's hold on a run: its owner and the fencing token its claim got."""

    run_id: str
    owner: str
    generation: int
    previous_owner: str | None = None
    """Who held the run before this claim (a crashed or stalled runner), if anyone."""

    def holds(self) -> tuple[Any, ...]:
        """WHERE clauses true only while this lease is the run's current one."""
        return (
            Run.id == self.run_id,
            Run.lease_owner == self.owner,
            Run.lease_generation == self.generation,
        )


class LeaseLost(RuntimeError):
    """Another runner claimed the run since: stop, write nothing more about it."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        super().__init__(
            f"{lease.owner} lost its lease on run {lease.run_id} (generation {lease.generation})"
        )


READ_ONLY = "rollback_bot_read_only"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and immediate write transactions.

    SQLite as an embedded default that holds: in WAL mode
    readers read a snapshot while one writer appends, so a session opened for
    reads (`Store.reading`, the engine option READ_ONLY) starts a plain
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


@dataclass(frozen=True)
class StepView:
    """A step's record."""

    position: int
    name: str
    state: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    summary: str
    output: str
    data: dict[str, Any]


def _marked_bad(row: TargetVersion) -> bool:
    """A version rolled away from that no approver has cleared (migration 0012)."""
    return row.state == VersionState.ROLLED_AWAY and row.cleared_at is None


class Store:
    """Row access for incidents, runs, approvals, steps and events."""

    OFFSET_SECONDS = 300.0
    """How long a measured offset between this process's clock and the database's is used."""

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

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a session whose transaction commits on success (on SQLite: BEGIN IMMEDIATE)."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Open a session for reads only: on SQLite a plain (deferred) BEGIN.

        In WAL mode a deferred read transaction reads a snapshot and takes no
        write lock, so reads never wait on each other or on a writer, and a
        long read never blocks a writer (`make_engine`).
        """
        with self._readers.begin() as session:
            yield session

    # incidents ----------------------------------------------------------------

    def new_incident_id(self, session: Session) -> str:
        """Return `INC-YYYYMMDD-HHMMSS`, with `-2`, `-3`… when the second is taken.

        Candidates are looked up by primary key, 20 at a time: no LIKE, which
        PostgreSQL cannot serve from the key under a non-C collation.
        """
        base = f"INC-{self.clock():%Y%m%d-%H%M%S}"
        for first in range(1, 10_000, 20):
            names = [base if n == 1 else f"{base}-{n}" for n in range(first, first + 20)]
            taken = set(session.scalars(select(Incident.id).where(Incident.id.in_(names))).all())
            free = next((name for name in names if name not in taken), None)
            if free is not None:
                return free
        raise RuntimeError(f"10,000 incidents opened in the second {base}; try again")

    def create_incident(self, **fields: Any) -> Incident:
        """Insert an incident with a fresh id and its `incident.opened` event; retry on id races."""
        for _ in range(20):
            try:
                with self.session() as session:
                    incident = Incident(
                        id=self.new_incident_id(session), created_at=self.clock(), **fields
                    )
                    session.add(incident)
                    session.flush()
                    self._event(
                        session,
                        incident_id=incident.id,
                        kind="incident.opened",
                        actor=fields.get("opened_by"),
                        detail={"severity": fields.get("severity"), "source": fields.get("source")},
                    )
                    return incident
            except IntegrityError:
                continue
        raise RuntimeError("could not allocate an incident id")

    def discard_incident(self, incident_id: str) -> None:
        """Delete an incident that never got a run (it lost the race for its target)."""
        with self.session() as session:
            if session.scalars(select(Run.id).where(Run.incident_id == incident_id)).first():
                return
            session.execute(delete(Event).where(Event.incident_id == incident_id))
            session.execute(delete(Incident).where(Incident.id == incident_id))

    def incident(self, incident_id: str) -> Incident | None:
        """Return an incident, or None."""
        with self.reading() as session:
            return session.get(Incident, incident_id)

    def update_incident(self, incident_id: str, **fields: Any) -> None:
        """Set fields on an incident (Slack channel and card ts, resolution time)."""
        with self.session() as session:
            session.execute(update(Incident).where(Incident.id == incident_id).values(**fields))

    # runs ---------------------------------------------------------------------

    def create_run(self, *, locks: list[str], actor: str, **fields: Any) -> Run:
        """Insert a requested run holding `locks` on its environment, or raise TargetBusy."""
        run_id = secrets.token_hex(8)
        now = self.clock()
        try:
            with self.session() as session:
                run = Run(id=run_id, created_at=now, state=RunState.REQUESTED, version=0, **fields)
                session.add(run)
                session.flush()
                for target in locks:
                    session.add(
                        TargetLock(
                            environment=run.environment,
                            target=target,
                            run_id=run_id,
                            incident_id=run.incident_id,
                        )
                    )
                session.flush()
                self._event(
                    session,
                    incident_id=run.incident_id,
                    run_id=run_id,
                    kind="run.requested",
                    actor=actor,
                    detail={"target": run.target, "point": run.point, "plan_hash": run.plan_hash},
                )
                return run
        except IntegrityError:
            holder = self.lock_holder(environment=fields["environment"], targets=locks)
            if holder is None:
                raise
            raise TargetBusy(
                environment=fields["environment"], target=fields["target"], incident_id=holder
            ) from None

    def lock_holder(self, *, environment: str, targets: list[str]) -> str | None:
        """Return the incident holding any of `targets`, or None."""
        with self.reading() as session:
            return session.scalars(
                select(TargetLock.incident_id).where(
                    TargetLock.environment == environment, TargetLock.target.in_(targets)
                )
            ).first()

    def run(self, run_id: str) -> Run | None:
        """Return a run, or None."""
        with self.reading() as session:
            return session.get(Run, run_id)

    def runs(
        self,
        *,
        incident_id: str | None = None,
        environment: str | None = None,
        target: str | None = None,
        states: tuple[str, ...] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Return runs, newest first, filtered."""
        query = select(Run).order_by(Run.created_at.desc(), Run.id).limit(limit)
        if incident_id is not None:
            query = query.where(Run.incident_id == incident_id)
        if environment is not None:
            query = query.where(Run.environment == environment)
        if target is not None:
            query = query.where(Run.target == target)
        if states is not None:
            query = query.where(Run.state.in_(states))
        with self.reading() as session:
            return list(session.scalars(query).all())

    def unresolved_failures(self, *, limit: int = 20) -> list[Run]:
        """Failed runs nobody has marked resolved since they failed, newest first.

        A failed run may still hold production in maintenance or half rolled back: it stays
        in status and App Home until a person resolves it (a `run.resolved` event after its
        latest `run.failed`; a retry that succeeds leaves the failed state anyway).
        """
        failed = (
            select(func.max(Event.at))
            .where(Event.run_id == Run.id, Event.kind == "run.failed")
            .correlate(Run)
            .scalar_subquery()
        )
        resolved = (
            select(Event.id)
            .where(Event.run_id == Run.id, Event.kind == "run.resolved", Event.at >= failed)
            .correlate(Run)
            .exists()
        )
        query = (
            select(Run)
            .where(Run.state == "failed", ~resolved)
            .order_by(Run.created_at.desc(), Run.id)
            .limit(limit)
        )
        with self.reading() as session:
            return list(session.scalars(query).all())

    def transition(
        self,
        run: Run,
        *,
        to: str,
        kind: str,
        actor: str | None,
        detail: dict[str, Any] | None = None,
        notify: str | None = None,
        lease: Lease | None = None,
        versions: VersionNote | None = None,
        **fields: Any,
    ) -> Run:
        """Move `run` from its current state to `to` with its event, or raise Conflict.

        `notify` enqueues that message to people in the same transaction (`bot.execution.outbox`).
        With `lease`, the change is made only while that lease holds the run (LeaseLost).
        `versions` records what the run taught about its target's versions, in the same
        transaction.
        """
        with self.session() as session:
            changed = self._bump(session, run, lease=lease, state=to, **fields)
            if not changed:
                self._fence(session, lease)
                raise Conflict(f"run {run.id} changed before the {kind} could be recorded")
            if versions is not None:
                self._remember(session, versions)
            if notify is not None:
                self._enqueue(session, run.id, notify, detail or {})
            if to in TERMINAL_STATES:
                session.execute(delete(TargetLock).where(TargetLock.run_id == run.id))
            self._event(
                session,
                incident_id=run.incident_id,
                run_id=run.id,
                kind=kind,
                actor=actor,
                detail=detail or {},
            )
            fresh = session.get(Run, run.id)
            assert fresh is not None
            return fresh

    def retry(
        self,
        run: Run,
        *,
        actor: str,
        locks: list[str],
        positions: list[int],
        retries: int,
        detail: dict[str, Any],
    ) -> Run:
        """Make a failed run approved again to re-run the steps at `positions` (their records go).

        One transaction: the state change, the target locks taken again (TargetBusy when
        another rollback holds one now), the step records dropped, the retry counted and the event.
        """
        try:
            with self.session() as session:
                values: dict[str, Any] = {"state": RunState.APPROVED, "retries": retries}
                if not self._bump(session, run, needs_manual=False, outcome="", **values):
                    raise Conflict(f"run {run.id} changed before the retry could be recorded")
                for target in locks:
                    session.add(
                        TargetLock(
                            environment=run.environment,
                            target=target,
                            run_id=run.id,
                            incident_id=run.incident_id,
                        )
                    )
                session.flush()
                session.execute(
                    delete(StepRecord).where(
                        StepRecord.run_id == run.id, StepRecord.position.in_(positions)
                    )
                )
                self._event(
                    session,
                    incident_id=run.incident_id,
                    run_id=run.id,
                    kind="run.retry",
                    actor=actor,
                    detail=detail,
                )
                fresh = session.get(Run, run.id)
                assert fresh is not None
                return fresh
        except IntegrityError:
            holder = self.lock_holder(environment=run.environment, targets=locks)
            if holder is None:
                raise
            raise TargetBusy(
                environment=run.environment, target=run.target, incident_id=holder
            ) from None

    def record_approval(
        self, run: Run, *, approver: str, since: datetime, to_state: str | None
    ) -> tuple[Run, int]:
        """Add `approver`'s approval of the run's plan; move to `to_state` if given.

        `to_state` is decided by the caller from the count it expects; the
        count is re-checked here inside the transaction. Returns the run and
        the number of valid approvals. Raises Conflict when the run changed
        first, IntegrityError when this approver already approved this plan.
        """
        with self.session() as session:
            now = self.clock()
            session.add(Approval(run_id=run.id, approver=approver, plan_hash=run.plan_hash, at=now))
            session.flush()
            count = self._approvals(session, run, since=since)
            new_state = to_state if to_state and count >= run.approvals_required else run.state
            values: dict[str, Any] = {"state": new_state}
            if new_state != run.state:
                values["approved_at"] = now
            if not self._bump(session, run, **values):
                raise Conflict(f"run {run.id} changed while approving")
            self._event(
                session,
                incident_id=run.incident_id,
                run_id=run.id,
                kind="run.approved" if new_state != run.state else "approval.added",
                actor=approver,
                detail={"approvals": count, "required": run.approvals_required},
            )
            fresh = session.get(Run, run.id)
            assert fresh is not None
            return fresh, count

    def approvers(self, run: Run, *, since: datetime) -> list[tuple[str, datetime]]:
        """Return (approver, time) for the run's current plan, approvals at or after `since`."""
        with self.reading() as session:
            rows = session.execute(
                select(Approval.approver, Approval.at)
                .where(
                    Approval.run_id == run.id,
                    Approval.plan_hash == run.plan_hash,
                    Approval.at >= since,
                )
                .order_by(Approval.at)
            ).all()
            return [(row[0], row[1]) for row in rows]

    def _approvals(self, session: Session, run: Run, *, since: datetime) -> int:
        return (
            session.scalar(
                select(func.count(func.distinct(Approval.approver))).where(
                    Approval.run_id == run.id,
                    Approval.plan_hash == run.plan_hash,
                    Approval.at >= since,
                )
            )
            or 0
        )

    def _bump(
        self, session: Session, run: Run, *, lease: Lease | None = None, **values: Any
    ) -> bool:
        query = update(Run).where(
            Run.id == run.id, Run.state == run.state, Run.version == run.version
        )
        if lease is not None:
            query = query.where(*lease.holds())
        result = session.execute(query.values(version=Run.version + 1, **values))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def set_run_fields(self, run_id: str, **fields: Any) -> None:
        """Set bookkeeping fields that are not state (Slack message ts, memory)."""
        with self.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(**fields))

    # target versions ------------------------------------------------------------

    def _remember(self, session: Session, note: VersionNote) -> None:
        now = self.clock()
        learnt = [
            (note.rolled_away, VersionState.ROLLED_AWAY),
            (note.healthy, VersionState.HEALTHY),
        ]
        for version, state in learnt:
            if version is None or not version[0]:
                continue
            key = version_key(version[0])
            row = session.get(TargetVersion, (note.environment, note.target, key))
            if row is None:
                row = TargetVersion(environment=note.environment, target=note.target, version=key)
                session.add(row)
            elif note.incident_id is None and _marked_bad(row):
                continue  # monitoring seeing it healthy does not clear it: an approver does
            row.state = state
            row.label = version[1]
            row.incident_id = note.incident_id
            row.at = now
            row.cleared_by = row.cleared_at = row.cleared_reason = None
            session.flush()

    def remember_versions(self, note: VersionNote) -> None:
        """Record a version seen healthy, or one rolled away from, outside a run's end."""
        with self.session() as session:
            self._remember(session, note)

    def known_versions(self, *, environment: str, target: str) -> KnownVersions:
        """Return what the bot remembers about a target's versions."""
        with self.reading() as session:
            rows = session.scalars(
                select(TargetVersion)
                .where(TargetVersion.environment == environment, TargetVersion.target == target)
                .order_by(TargetVersion.at.desc())
            ).all()
        healthy = next((r for r in rows if r.state == VersionState.HEALTHY), None)
        return KnownVersions(
            healthy=healthy.version if healthy else None,
            healthy_label=healthy.label if healthy else "",
            healthy_incident=healthy.incident_id if healthy else None,
            rolled_away={
                r.version: r.incident_id or "an earlier incident" for r in rows if _marked_bad(r)
            },
            healthy_keys=tuple(r.version for r in rows if r.state == VersionState.HEALTHY),
        )

    # leases -------------------------------------------------------------------
    #
    # A lease is (owner, generation, expiry). Expiry is computed and compared on the
    # database's clock, never a process's own, so two bot hosts whose clocks disagree
    # still agree on who holds a run. Every claim bumps `lease_generation`, the
    # fencing token: each write a runner makes about a run (transitions, step records,
    # memory, release) is conditional on its generation in the same transaction, on
    # the run's row, so a runner that lost its lease cannot write over its successor.

    FREE_BYTES = 1 << 20
    """Below this much free space on a SQLite file's filesystem the database counts as full."""

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
        one query and re-measured every `OFFSET_SECONDS` (leases compare on the database
        directly, `_db_now`).
        """
        with self._offset_lock:
            if self._offset is None or time.monotonic() - self._offset[0] > self.OFFSET_SECONDS:
                try:
                    with self.reading() as session:
                        raw = session.scalar(select(self._db_now()))
                except Exception:
                    if self._offset is None:
                        raise
                    # the database is away: the last offset stays good (clocks drift slowly),
                    # so a runner can still stamp a step's end it is waiting to write
                    return self.process_clock() + self._offset[1]
                db = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
                self._offset = (time.monotonic(), db.replace(tzinfo=UTC) - self.process_clock())
            return self.process_clock() + self._offset[1]

    def _db_now(self, seconds: float = 0.0) -> Any:
        """The database's current UTC time plus `seconds`, as stored (naive UTC)."""
        if self.engine.dialect.name == "sqlite":
            # '%f' gives SS.SSS; three more zeros match SQLAlchemy's stored format exactly,
            # so the text comparison with stored values is a time comparison.
            return func.strftime("%Y-%m-%d %H:%M:%f", "now", f"{seconds:+.3f} seconds").concat(
                "000"
            )
        now = func.timezone("UTC", func.now())
        return now + func.make_interval(0, 0, 0, 0, 0, 0, seconds) if seconds else now

    def claim(self, run_id: str, *, owner: str, seconds: float) -> Lease | None:
        """Take the run's lease if it is free or expired; return it (with its new token)."""
        with self.session() as session:
            return self._claim(session, run_id, owner=owner, seconds=seconds)

    def _claim(self, session: Session, run_id: str, *, owner: str, seconds: float) -> Lease | None:
        previous = session.scalar(select(Run.lease_owner).where(Run.id == run_id))
        generation = session.scalar(
            update(Run)
            .where(
                Run.id == run_id,
                Run.state.in_(EXECUTABLE_STATES),
                (Run.lease_owner.is_(None)) | (Run.lease_expires_at < self._db_now()),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=self._db_now(seconds),
                lease_generation=Run.lease_generation + 1,
            )
            .returning(Run.lease_generation)
        )
        if generation is None:
            return None
        return Lease(run_id, owner, int(generation), previous_owner=previous)

    def claim_next(
        self, *, owner: str, seconds: float, skip: set[str] | None = None
    ) -> Lease | None:
        """Claim the oldest approved or running run nobody holds; None when there is none.

        On PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED, so
        runners of several processes claiming at once each get a different run
        without waiting on each other; SQLite serializes writers anyway.
        """
        with self.session() as session:
            query = (
                select(Run.id)
                .where(
                    Run.state.in_(EXECUTABLE_STATES),
                    (Run.lease_owner.is_(None)) | (Run.lease_expires_at < self._db_now()),
                )
                .order_by(Run.approved_at, Run.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if skip:
                query = query.where(Run.id.not_in(skip))
            run_id = session.scalar(query)
            if run_id is None:
                return None
            return self._claim(session, run_id, owner=owner, seconds=seconds)

    def renew(self, lease: Lease, *, seconds: float) -> bool:
        """Extend the lease we hold; False if it was lost (someone claimed it since)."""
        with self.session() as session:
            result = session.execute(
                update(Run).where(*lease.holds()).values(lease_expires_at=self._db_now(seconds))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, lease: Lease) -> None:
        """Give the lease back (only if it is still ours)."""
        with self.session() as session:
            session.execute(
                update(Run).where(*lease.holds()).values(lease_owner=None, lease_expires_at=None)
            )

    def _fence(self, session: Session, lease: Lease | None) -> None:
        """Raise LeaseLost unless `lease` still holds its run; lock the run's row till commit."""
        if lease is None:
            return
        result = session.execute(
            update(Run).where(*lease.holds()).values(lease_generation=Run.lease_generation)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(lease)

    def set_run_memory(self, run_id: str, memory: dict[str, Any], *, lease: Lease | None) -> None:
        """Save a run's step memory, only while `lease` still holds the run."""
        with self.session() as session:
            query = update(Run).where(Run.id == run_id)
            if lease is not None:
                query = query.where(*lease.holds())
            result = session.execute(query.values(memory=memory))
            if lease is not None and not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(lease)

    def claimable(self) -> list[str]:
        """Return ids of approved or running runs whose lease is free or expired."""
        with self.reading() as session:
            return list(
                session.scalars(
                    select(Run.id)
                    .where(
                        Run.state.in_(EXECUTABLE_STATES),
                        (Run.lease_owner.is_(None)) | (Run.lease_expires_at < self._db_now()),
                    )
                    .order_by(Run.approved_at)
                ).all()
            )

    def due_for_expiry(self) -> list[Run]:
        """Return requested runs past their expiry time."""
        with self.reading() as session:
            return list(
                session.scalars(
                    select(Run).where(
                        Run.state == RunState.REQUESTED, Run.expires_at < self.clock()
                    )
                ).all()
            )

    def due_for_auto_approval(self) -> list[Run]:
        """Return requested runs whose veto window has ended, oldest deadline first."""
        with self.reading() as session:
            return list(
                session.scalars(
                    select(Run)
                    .where(Run.state == RunState.REQUESTED, Run.auto_approve_at <= self.clock())
                    .order_by(Run.auto_approve_at)
                ).all()
            )

    # steps --------------------------------------------------------------------

    def steps(self, run_id: str) -> list[StepView]:
        """Return the run's step records in plan order."""
        with self.reading() as session:
            rows = session.scalars(
                select(StepRecord).where(StepRecord.run_id == run_id).order_by(StepRecord.position)
            ).all()
            return [
                StepView(
                    r.position,
                    r.name,
                    r.state,
                    r.attempts,
                    r.started_at,
                    r.finished_at,
                    r.summary,
                    r.output,
                    r.data,
                )
                for r in rows
            ]

    def save_step(
        self,
        run: Run,
        *,
        position: int,
        name: str,
        event_kind: str,
        notify: str | None = None,
        lease: Lease | None = None,
        phase: str | None = None,
        **fields: Any,
    ) -> None:
        """Create or update a step record, with its event (and `notify`), in one transaction.

        With `lease`, only while that lease holds the run (else LeaseLost, nothing written).
        `phase`, the step's in the plan, is said in the event (what came after recovery).
        """
        with self.session() as session:
            self._fence(session, lease)
            record = session.scalars(
                select(StepRecord).where(
                    StepRecord.run_id == run.id, StepRecord.position == position
                )
            ).first()
            if record is None:
                record = StepRecord(run_id=run.id, position=position, name=name, state="pending")
                session.add(record)
            for key, value in fields.items():
                setattr(record, key, value)
            detail = {"position": position, "name": name, "state": record.state}
            if phase is not None:
                detail["phase"] = phase
            if record.summary:
                detail["summary"] = record.summary
            if notify is not None:
                self._enqueue(
                    session,
                    run.id,
                    notify,
                    {"position": position, "attempts": record.attempts or 0},
                )
            self._event(
                session,
                incident_id=run.incident_id,
                run_id=run.id,
                kind=event_kind,
                actor=None,
                detail=detail,
            )

    # outbox -------------------------------------------------------------------

    def _enqueue(
        self, session: Session, run_id: str | None, kind: str, detail: dict[str, Any]
    ) -> None:
        session.add(
            OutboxMessage(
                run_id=run_id,
                kind=kind,
                detail=detail,
                state="pending",
                attempts=0,
                created_at=self.clock(),
                last_error="",
            )
        )

    def enqueue(self, run_id: str | None, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Queue a message to people about a run, or a notice to one person about no run
        (`run_id` None), delivered by `bot.execution.outbox.Sender`."""
        with self.session() as session:
            self._enqueue(session, run_id, kind, detail or {})

    def outbox_heads(self) -> list[OutboxMessage]:
        """Return the oldest pending message of each run that has one, oldest first.

        Only a thread's head is ever delivered, so messages arrive in order per thread;
        the notices that belong to no run are one such line (GROUP BY puts NULLs together).
        """
        with self.reading() as session:
            heads = (
                select(func.min(OutboxMessage.id))
                .where(OutboxMessage.state == "pending")
                .group_by(OutboxMessage.run_id)
            )
            return list(
                session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.id.in_(heads))
                    .order_by(OutboxMessage.id)
                ).all()
            )

    def has_later_message(self, message: OutboxMessage) -> bool:
        """Return whether a newer pending message waits in the same run's thread."""
        with self.reading() as session:
            later = session.scalar(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.run_id == message.run_id,
                    OutboxMessage.state == "pending",
                    OutboxMessage.id > message.id,
                )
                .limit(1)
            )
            return later is not None

    def outbox_backlog(self) -> int:
        """Return how many messages wait to be delivered."""
        with self.session() as session:
            return int(
                session.scalar(
                    select(func.count(OutboxMessage.id)).where(OutboxMessage.state == "pending")
                )
                or 0
            )

    def outbox(self, run_id: str | None, *, kind: str | None = None) -> list[OutboxMessage]:
        """Return a run's messages in order, whatever their state (None: the messages that
        belong to no run), all or of one `kind`."""
        mine = OutboxMessage.run_id.is_(None) if run_id is None else OutboxMessage.run_id == run_id
        query = select(OutboxMessage).where(mine).order_by(OutboxMessage.id)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        with self.reading() as session:
            return list(session.scalars(query).all())

    def outbox_claim(self, message: OutboxMessage, *, seconds: float) -> bool:
        """Take a due message for delivery by this process; False if another took it first.

        The claim moves `next_attempt_at` forward, so a sender that dies mid-delivery
        leaves the message due again after `seconds`, and senders of several bot
        processes never deliver the same message at once. Due and claimed on the shared
        clock (`clock`): a sender whose own clock runs ahead must not take a message
        another sender's claim still holds.
        """
        now = self.clock()
        with self.session() as session:
            result = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.state == "pending",
                    (OutboxMessage.next_attempt_at.is_(None))
                    | (OutboxMessage.next_attempt_at <= now),
                )
                .values(next_attempt_at=now + timedelta(seconds=seconds))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def outbox_done(self, message_id: int, *, state: str, error: str = "") -> None:
        """Mark a message `sent`, `superseded` or `failed` (never to be tried again)."""
        with self.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(
                    state=state,
                    sent_at=self.clock(),
                    last_error=error,
                    attempts=OutboxMessage.attempts + 1,
                )
            )

    def outbox_retry(self, message_id: int, *, at: datetime, error: str) -> None:
        """Keep a message pending, not to be tried before `at`."""
        with self.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(next_attempt_at=at, last_error=error, attempts=OutboxMessage.attempts + 1)
            )

    def slack_slot(self, run_id: str, slot: str) -> SlackMessage | None:
        """Return the message the bot posted for `slot` in a run's thread, if it did."""
        with self.reading() as session:
            return session.get(SlackMessage, (run_id, slot))

    def run_of_message(self, *, channel: str | None, ts: str) -> str | None:
        """The run whose thread holds the bot's message (channel, ts): one indexed lookup."""
        if channel is None:
            return None
        with self.reading() as session:
            return session.scalar(
                select(SlackMessage.run_id)
                .where(SlackMessage.channel == channel, SlackMessage.ts == ts)
                .limit(1)
            )

    def set_slack_slot(self, run_id: str, slot: str, *, channel: str, ts: str) -> None:
        """Record the ts of the message posted for `slot` (first writer wins)."""
        try:
            with self.session() as session:
                session.add(
                    SlackMessage(run_id=run_id, slot=slot, channel=channel, ts=ts, at=self.clock())
                )
        except IntegrityError:
            return

    # events -------------------------------------------------------------------

    def add_event(
        self,
        *,
        incident_id: str,
        kind: str,
        actor: str | None = None,
        run_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit event."""
        with self.session() as session:
            self._event(
                session,
                incident_id=incident_id,
                run_id=run_id,
                kind=kind,
                actor=actor,
                detail=detail or {},
            )

    def events(self, incident_id: str) -> list[Event]:
        """Return an incident's events in order."""
        with self.reading() as session:
            return list(
                session.scalars(
                    select(Event).where(Event.incident_id == incident_id).order_by(Event.id)
                ).all()
            )

    def step_values(self, key: str, *, limit: int = 5) -> list[float]:
        """Return the numeric `data[key]` of the newest finished steps that recorded it."""
        with self.reading() as session:
            rows = session.scalars(
                select(StepRecord.data)
                .where(StepRecord.state == StepState.SUCCEEDED, StepRecord.finished_at.is_not(None))
                .order_by(StepRecord.finished_at.desc())
                .limit(200)
            ).all()
        values = [float(d[key]) for d in rows if isinstance(d, dict) and key in d]
        return values[:limit]

    def _event(
        self,
        session: Session,
        *,
        incident_id: str,
        kind: str,
        actor: str | None,
        detail: dict[str, Any],
        run_id: str | None = None,
    ) -> None:
        session.add(
            Event(
                incident_id=incident_id,
                run_id=run_id,
                at=self.clock(),
                kind=kind,
                actor=actor,
                detail=detail,
            )
        )

    # break-glass reviews (bot/application/reviews.py) --------------------------------------

    def add_review(
        self, *, run: Run, reviewer: str, pick: Callable[[int], str] | None = None
    ) -> BreakGlassReview:
        """Assign the review of break-glass `run` to `reviewer` (or `pick(n)`), once.

        `pick` is given how many reviews this environment has had, inside the same
        transaction, for round-robin; a run already assigned keeps its reviewer.
        """
        try:
            with self.session() as session:
                if pick is not None:
                    done = session.scalar(
                        select(func.count()).where(BreakGlassReview.environment == run.environment)
                    )
                    reviewer = pick(int(done or 0))
                review = BreakGlassReview(
                    run_id=run.id,
                    incident_id=run.incident_id,
                    environment=run.environment,
                    requester=run.requester,
                    reviewer=reviewer,
                    assigned_at=self.clock(),
                )
                session.add(review)
                session.flush()
                self._event(
                    session,
                    incident_id=run.incident_id,
                    run_id=run.id,
                    kind="review.assigned",
                    actor=None,
                    detail={"reviewer": reviewer},
                )
                return review
        except IntegrityError:
            existing = self.review(run.id)
            assert existing is not None
            return existing

    def review(self, run_id: str) -> BreakGlassReview | None:
        """Return a run's break-glass review, or None."""
        with self.reading() as session:
            return session.get(BreakGlassReview, run_id)

    def mark_reviewed(self, run_id: str, *, user: str) -> bool:
        """Record that `user` reviewed the run, with its event; False if it already was."""
        with self.session() as session:
            result = session.execute(
                update(BreakGlassReview)
                .where(BreakGlassReview.run_id == run_id, BreakGlassReview.reviewed_at.is_(None))
                .values(reviewed_by=user, reviewed_at=self.clock())
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            review = session.get(BreakGlassReview, run_id)
            assert review is not None
            self._event(
                session,
                incident_id=review.incident_id,
                run_id=run_id,
                kind="run.reviewed",
                actor=user,
                detail={"reviewer": review.reviewer},
            )
            return True

    def unreviewed(self, *, limit: int = 50) -> list[BreakGlassReview]:
        """Return the break-glass reviews not yet done, oldest first."""
        with self.reading() as session:
            return list(
                session.scalars(
                    select(BreakGlassReview)
                    .where(BreakGlassReview.reviewed_at.is_(None))
                    .order_by(BreakGlassReview.assigned_at, BreakGlassReview.run_id)
                    .limit(limit)
                ).all()
            )

    # entry keys (Slack requests already acted on; owned by the entry points) -----

    def receive_entry(self, key: str, *, keep: timedelta = timedelta(days=1)) -> bool:
        """Record `key` as received; False if it was already (a retry or a replay).

        The primary key decides between concurrent duplicates. Keys older than
        `keep` (far beyond Slack's retries and its 5-minute replay window) are
        dropped on the way.
        """
        now = self.clock()
        with self.session() as session:
            session.execute(delete(EntryKey).where(EntryKey.received_at < now - keep))
        try:
            with self.session() as session:
                session.add(EntryKey(key=key, received_at=now, outcome=None))
            return True
        except IntegrityError:
            return False

    def has_entry(self, key: str) -> bool:
        """Return whether a request with `key` was received."""
        with self.reading() as session:
            return session.get(EntryKey, key) is not None

    def entry_outcome(self, key: str) -> str | None:
        """Return what the first request with `key` did, if it has finished."""
        with self.reading() as session:
            row = session.get(EntryKey, key)
            return row.outcome if row else None

    def settle_entry(self, key: str, *, outcome: str) -> None:
        """Record what the request with `key` did."""
        with self.session() as session:
            session.execute(update(EntryKey).where(EntryKey.key == key).values(outcome=outcome))

    def release_entry(self, key: str) -> None:
        """Forget `key`, so the same request may act later (it changed nothing)."""
        with self.session() as session:
            session.execute(delete(EntryKey).where(EntryKey.key == key))

    # rechecks (bot.execution.recheck) ------------------------------------------------------
    #
    # A due re-check is claimed like a run: a conditional UPDATE that bumps its fencing
    # token, the candidate picked FOR UPDATE SKIP LOCKED on PostgreSQL; its result, its
    # event and its message are written in one transaction only while that claim holds.

    def schedule_recheck(
        self,
        run: Run,
        *,
        position: int,
        source: str,
        step: str,
        spec: dict[str, Any],
        due_at: datetime,
    ) -> bool:
        """Add a re-check of the undo step at `position`; False if it was already scheduled."""
        try:
            with self.session() as session:
                session.add(
                    Recheck(
                        run_id=run.id,
                        incident_id=run.incident_id,
                        position=position,
                        source=source,
                        step=step,
                        spec=spec,
                        due_at=due_at,
                        state=RecheckState.PENDING,
                        attempts=0,
                        claim_generation=0,
                        outcome="",
                    )
                )
            return True
        except IntegrityError:
            return False

    def rechecks(self, run_id: str) -> list[Recheck]:
        """Return a run's re-checks in plan order."""
        with self.reading() as session:
            return list(
                session.scalars(
                    select(Recheck).where(Recheck.run_id == run_id).order_by(Recheck.position)
                ).all()
            )

    def claim_next_recheck(self, *, owner: str, seconds: float) -> Recheck | None:
        """Claim the oldest due re-check nobody holds (or whose holder's claim ran out)."""
        now = self.clock()
        due = (Recheck.state == RecheckState.PENDING) | (
            (Recheck.state == RecheckState.CHECKING) & (Recheck.claim_expires_at < now)
        )
        with self.session() as session:
            found = session.scalar(
                select(Recheck.id)
                .where(due, Recheck.due_at <= now)
                .order_by(Recheck.due_at, Recheck.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if found is None:
                return None
            result = session.execute(
                update(Recheck)
                .where(Recheck.id == found, due)
                .values(
                    state=RecheckState.CHECKING,
                    claimed_by=owner,
                    claim_expires_at=now + timedelta(seconds=seconds),
                    claim_generation=Recheck.claim_generation + 1,
                    attempts=Recheck.attempts + 1,
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            return session.get(Recheck, found)

    def settle_recheck(
        self,
        recheck: Recheck,
        *,
        state: str,
        outcome: str,
        changed: bool | None = None,
        notify: str | None = None,
        detail: dict[str, Any] | None = None,
        due_at: datetime | None = None,
        spec: dict[str, Any] | None = None,
        event: bool = True,
    ) -> bool:
        """Record a claimed re-check's result with its event and message, while the claim holds.

        `state` pending (with `due_at`) hands it back for a later attempt. `spec` replaces what
        the row remembers (the hold's progress); `event=False` leaves no audit event (a poll
        that found nothing new). False, and nothing written, when another process claimed it
        since.
        """
        with self.session() as session:
            values: dict[str, Any] = {
                "state": state,
                "outcome": outcome,
                "changed": changed,
                "claimed_by": None,
                "claim_expires_at": None,
            }
            if due_at is not None:
                values["due_at"] = due_at
            if spec is not None:
                values["spec"] = spec
            if state != RecheckState.PENDING:
                values["checked_at"] = self.clock()
            result = session.execute(
                update(Recheck)
                .where(
                    Recheck.id == recheck.id,
                    Recheck.state == RecheckState.CHECKING,
                    Recheck.claimed_by == recheck.claimed_by,
                    Recheck.claim_generation == recheck.claim_generation,
                )
                .values(**values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            said = {"position": recheck.position, "outcome": outcome, **(detail or {})}
            if notify is not None:
                self._enqueue(session, recheck.run_id, notify, said)
            if not event:
                return True
            self._event(
                session,
                incident_id=recheck.incident_id,
                run_id=recheck.run_id,
                kind=f"recheck.{state}",
                actor=None,
                detail={**said, "changed": changed},
            )
            return True

    # sync resumes (bot.application.resync) ----------------------------------------------------

    def begin_resume(self, run_id: str, *, by: str) -> SyncResume | None:
        """Record that `by` resumes the run's GitOps sync now; the earlier record if taken.

        A record whose attempt failed is taken over; one resuming or resumed is returned.
        """
        now = self.clock()
        try:
            with self.session() as session:
                session.add(SyncResume(run_id=run_id, by=by, at=now, state="resuming", outcome=""))
            return None
        except IntegrityError:
            pass
        with self.session() as session:
            retried = session.execute(
                update(SyncResume)
                .where(SyncResume.run_id == run_id, SyncResume.state == "failed")
                .values(by=by, at=now, state="resuming", outcome="")
            )
            if retried.rowcount:  # type: ignore[attr-defined]
                return None
            return session.get(SyncResume, run_id)

    def end_resume(
        self,
        run: Run,
        *,
        by: str,
        ok: bool,
        outcome: str,
        detail: dict[str, Any],
    ) -> None:
        """Record how the resume went, with its audit event and its thread message, at once."""
        state = "resumed" if ok else "failed"
        with self.session() as session:
            session.execute(
                update(SyncResume)
                .where(SyncResume.run_id == run.id, SyncResume.by == by)
                .values(state=state, outcome=outcome)
            )
            said = {**detail, "by": by, "ok": ok, "outcome": outcome}
            self._enqueue(session, run.id, "gitops.resumed", said)
            self._event(
                session,
                incident_id=run.incident_id,
                run_id=run.id,
                kind="sync.resumed" if ok else "sync.resume_failed",
                actor=by,
                detail=said,
            )

    def resume_of(self, run_id: str) -> SyncResume | None:
        """Return the run's Resume sync record, if anyone pressed it."""
        with self.reading() as session:
            return session.get(SyncResume, run_id)

    # drills (bot/application/drills.py) ------------------------------------------------------

    def add_drill(self, **fields: Any) -> Drill:
        """Record a drill when its run is requested."""
        with self.session() as session:
            drill = Drill(created_at=self.clock(), steps=[], targets={}, **fields)
            session.add(drill)
            return drill

    def drill(self, run_id: str) -> Drill | None:
        """Return the drill of a run, or None when the run is not a drill."""
        with self.reading() as session:
            return session.get(Drill, run_id)

    def update_drill(self, run_id: str, **fields: Any) -> None:
        """Set what a drill measured once its run ended."""
        with self.session() as session:
            session.execute(update(Drill).where(Drill.run_id == run_id).values(**fields))

    def drills(
        self,
        *,
        environment: str | None = None,
        target: str | None = None,
        states: tuple[str, ...] | None = None,
        limit: int = 200,
    ) -> list[Drill]:
        """Return drills, newest first, filtered."""
        query = select(Drill).order_by(Drill.created_at.desc(), Drill.run_id).limit(limit)
        if environment is not None:
            query = query.where(Drill.environment == environment)
        if target is not None:
            query = query.where(Drill.target == target)
        if states is not None:
            query = query.where(Drill.state.in_(states))
        with self.reading() as session:
            return list(session.scalars(query).all())
