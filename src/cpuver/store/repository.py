"""The guest repository: define, read, compare-and-swap update, history, delete.

One :class:`GuestStore` per database URL. Every method is one transaction; on any error nothing
of it is written. SQLite transactions that write start with ``BEGIN IMMEDIATE`` so two writers
queue on the database lock (busy timeout) instead of failing half-way.
"""

from __future__ import annotations

import builtins
import enum
import getpass
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry

from cpuver.names import check_name
from cpuver.store import (
    ConcurrentUpdate,
    GuestExists,
    GuestNotFound,
    StoreError,
    StoreUnavailable,
    schema,
)
from cpuver.store.tables import cpu_history, guests

SQLITE_BUSY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10
"""How long a PostgreSQL connection attempt may take before the store is unavailable."""
_WRITE = "cpuver_write"
_log = logging.getLogger("cpuver.store")
_log.addHandler(logging.NullHandler())  # the CLI says only the one-line error; serve logs it

# What SQLite says (the only text of its errors) -> what the user is told.
_SQLITE_UNAVAILABLE = (
    ("database is locked", "the database is locked by another writer"),
    ("readonly database", "the database is read-only"),
    ("disk is full", "the database's disk is full"),
    ("unable to open database file", "the database file cannot be opened"),
    ("disk i/o error", "the database's disk failed (I/O error)"),
)


def safe_url(url: str) -> str:
    """``url`` fit to print: the password replaced, nothing when it cannot be parsed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(a database URL that cannot be parsed)"


def database_error(err: SQLAlchemyError) -> StoreError:
    """A database error as a one-line :class:`StoreError` for the user: which kind of problem,
    never the SQL, its parameters, the server's address or socket path. The details go to the
    ``cpuver.store`` log (one line, for the operator)."""
    original = err.orig if isinstance(err, DBAPIError) else err
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
    _log.warning("database error: %s: %s", type(original).__name__, first_line)
    text = str(original).lower()
    if isinstance(err, OperationalError | InterfaceError | PoolTimeout) or (
        isinstance(err, DBAPIError) and err.connection_invalidated
    ):
        for said, meaning in _SQLITE_UNAVAILABLE:
            if said in text:
                return StoreUnavailable(f"database unavailable: {meaning}")
        return StoreUnavailable("database unavailable: the database server cannot be reached")
    if isinstance(err, IntegrityError):
        return StoreError("the database refused the change (it conflicts with a stored row)")
    if isinstance(err, DataError):
        return StoreError("the database refused a value (too long or not storable)")
    return StoreError(f"database error ({type(original).__name__})")


class Unset(enum.Enum):
    """Type of :data:`UNSET`, the default of :meth:`GuestStore.update` fields left alone."""

    TOKEN = "UNSET"


UNSET = Unset.TOKEN


def default_url() -> str:
    """SQLite file ``$XDG_DATA_HOME/cpuver/cpuver.db`` (default ``~/.local/share/cpuver``)."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(data) / 'cpuver' / 'cpuver.db'}"


def store_exists(url: str | None = None) -> bool:
    """Whether the store at ``url`` may hold anything: a SQLite file must exist (a look-up
    must not create one); a server database is asked when used."""
    parsed = make_url(url or default_url())
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database
    return database is not None and database != ":memory:" and Path(database).expanduser().is_file()


def default_actor() -> str:
    """Who is changing things: ``$USER``, else the login name of the process."""
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _utc(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def names_near(conn: Connection, column: Column[str], name: str, count: int) -> list[str]:
    """Up to ``count`` names of ``column`` sorting before ``name`` and ``count`` from it on, in
    order: two indexed range reads of names only, for suggesting a name close to a misspelt one
    without reading every row of a big store."""
    before = conn.execute(
        select(column).where(column < name).order_by(column.desc()).limit(count)
    ).scalars()
    after = conn.execute(select(column).where(column >= name).order_by(column).limit(count))
    return [*reversed(list(before)), *after.scalars()]


@dataclass(frozen=True)
class GuestRecord:
    """One guest as stored; ``pin_json``/``pending_json`` are the documents as given."""

    id: int
    name: str
    state: str
    host: str | None
    machine: str
    pin_json: str
    fingerprint: str
    pending_json: str | None
    snapshots_json: str
    generation: int
    created: datetime
    updated: datetime
    definition: str | None = None
    """The domain XML the guest was defined from, as given (None for a guest file)."""

    @classmethod
    def from_row(cls, row: Row[Any]) -> GuestRecord:
        return cls(
            id=row.id,
            name=row.name,
            state=row.state,
            host=row.host,
            machine=row.machine,
            pin_json=row.pin_json,
            fingerprint=row.pin_fingerprint,
            pending_json=row.pending_json,
            snapshots_json=row.snapshots_json,
            generation=row.generation,
            created=_utc(row.created),
            updated=_utc(row.updated),
            definition=row.definition,
        )


@dataclass(frozen=True)
class HistoryRecord:
    """One change of a guest's pin: when, who, why, from what to what (old is None at define)."""

    guest: str
    at: datetime
    actor: str
    reason: str
    old_fingerprint: str | None
    new_fingerprint: str
    old_pin_json: str | None
    new_pin_json: str


@dataclass(frozen=True)
class NewGuest:
    """A guest to define with :meth:`GuestStore.define_many`."""

    name: str
    state: str
    machine: str
    pin_json: str
    fingerprint: str
    host: str | None = None
    pending_json: str | None = None
    definition: str | None = None


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    # pysqlite's own transaction handling is off, so SQLAlchemy's BEGIN is the one that counts
    # (and DDL is transactional); writers take the lock up front.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class GuestStore:
    """Guests in a database given by URL (default: :func:`default_url`).

    ``url`` takes SQLAlchemy URLs: ``sqlite:///path/to/file.db``,
    ``postgresql+psycopg://user@host/dbname``. The schema is created or migrated on first use.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        try:
            backend = make_url(self.url).get_backend_name()
            if backend == "sqlite":
                self._engine = _sqlite_engine(self.url)
            else:
                # a connection that a restarted server dropped is found and replaced before
                # use (SQLAlchemy's pre-ping), so no request fails on a stale pooled connection
                connect_args = (
                    {"connect_timeout": CONNECT_TIMEOUT_S} if backend == "postgresql" else {}
                )
                self._engine = create_engine(
                    self.url, pool_pre_ping=True, connect_args=connect_args
                )
        except (SQLAlchemyError, ValueError, ImportError, OSError) as err:
            reason = type(err).__name__ if isinstance(err, SQLAlchemyError) else str(err)
            if isinstance(err, OSError):
                reason = err.strerror or type(err).__name__
            raise StoreError(f"cannot open the store {safe_url(self.url)}: {reason}") from err
        self._migrated = False

    # -- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> GuestStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def migrate(self) -> bool:
        """Create or upgrade the schema to the newest revision; True when anything ran."""
        with self._connection(write=True) as conn:
            ran = schema.upgrade(conn)
        self._migrated = True
        return ran

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        """One transaction on a migrated database: committed at the end, rolled back on error."""
        if not self._migrated:
            self.migrate()
        with self._connection(write=write) as conn:
            yield conn

    @contextmanager
    def _connection(self, *, write: bool) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any error."""
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{_WRITE: write})
                with conn.begin():
                    yield conn
        except StoreError:
            raise
        except SQLAlchemyError as err:
            raise database_error(err) from err

    def read_one(self, query: str, value: str) -> Any:
        """The first column of the first row of ``query`` (one ``?`` parameter), or None.

        For the one read every service request makes (a pool's change counter): straight on a
        pooled DBAPI connection, a fifth of what a SQLAlchemy transaction costs. Errors are
        :class:`StoreError` as everywhere."""
        if not self._migrated:
            self.migrate()
        dialect = self._engine.dialect
        if dialect.paramstyle != "qmark":
            query = query.replace("?", "%s")
        try:
            connection = self._engine.raw_connection()
        except SQLAlchemyError as err:
            raise database_error(err) from err
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(query, (value,))
                row = cursor.fetchone()
            finally:
                cursor.close()
            if dialect.name != "sqlite":
                connection.rollback()  # end the read's transaction before the pool keeps it
            return row[0] if row is not None else None
        except dialect.loaded_dbapi.Error as err:
            connection.invalidate()
            wrapped = DBAPIError.instance(
                query, (value,), err, dialect.loaded_dbapi.Error, dialect=dialect
            )
            raise database_error(wrapped) from err
        finally:
            connection.close()

    @staticmethod
    def _row(conn: Connection, name: str) -> Row[Any]:
        check_name("guest", name)
        row = conn.execute(select(guests).where(guests.c.name == name)).one_or_none()
        if row is None:
            raise GuestNotFound(name)
        return row

    # -- API -------------------------------------------------------------------------------------

    def define(
        self,
        name: str,
        state: str,
        machine: str,
        pin_json: str,
        fingerprint: str,
        *,
        reason: str,
        actor: str | None = None,
        host: str | None = None,
        pending_json: str | None = None,
        definition: str | None = None,
    ) -> GuestRecord:
        """Store a new guest at generation 1 and record its first pin in the history.

        Raises :class:`GuestExists` when the name is taken.
        """
        guest = NewGuest(
            name, state, machine, pin_json, fingerprint, host, pending_json, definition
        )
        return self._define([guest], reason=reason, actor=actor, read_back=True)[0]

    def define_many(self, new: Iterable[NewGuest], *, reason: str, actor: str | None = None) -> int:
        """Define several guests in one transaction (all or none); returns how many.

        Raises :class:`GuestExists` when any name is taken (or given twice).
        """
        batch = builtins.list(new)
        if batch:
            self._define(batch, reason=reason, actor=actor, read_back=False)
        return len(batch)

    def _define(
        self, batch: builtins.list[NewGuest], *, reason: str, actor: str | None, read_back: bool
    ) -> builtins.list[GuestRecord]:
        """Insert ``batch`` and its first history rows in one transaction; the new records
        (read in the same transaction) when ``read_back``."""
        for g in batch:
            check_name("guest", g.name)
            if g.host is not None:
                check_name("host", g.host)
        who = actor or default_actor()
        now = _now()
        rows = [
            {
                "name": g.name,
                "state": g.state,
                "host": g.host,
                "machine": g.machine,
                "pin_json": g.pin_json,
                "pin_fingerprint": g.fingerprint,
                "pending_json": g.pending_json,
                "definition": g.definition,
                "generation": 1,
                "created": now,
                "updated": now,
            }
            for g in batch
        ]
        try:
            with self._transaction(write=True) as conn:
                ids = (
                    conn.execute(
                        insert(guests).returning(guests.c.id, sort_by_parameter_order=True), rows
                    )
                    .scalars()
                    .all()
                )
                conn.execute(
                    insert(cpu_history),
                    [
                        {
                            "guest_id": guest_id,
                            "guest_name": g.name,
                            "at": now,
                            "actor": who,
                            "reason": reason,
                            "old_fingerprint": None,
                            "new_fingerprint": g.fingerprint,
                            "old_pin_json": None,
                            "new_pin_json": g.pin_json,
                        }
                        for guest_id, g in zip(ids, batch, strict=True)
                    ],
                )
                if not read_back:
                    return []
                created = conn.execute(
                    select(guests).where(guests.c.id.in_(ids)).order_by(guests.c.id)
                ).all()
                return [GuestRecord.from_row(row) for row in created]
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                taken = self._taken([g.name for g in batch])
                if taken:
                    raise GuestExists(taken[0]) from err.__cause__
            raise

    def _taken(self, names: builtins.list[str]) -> builtins.list[str]:
        """Names in ``names`` that exist already or are given twice (for GuestExists)."""
        seen: set[str] = set()
        for n in names:
            if n in seen:
                return [n]
            seen.add(n)
        existing: set[str] = set()
        with self._transaction(write=False) as conn:
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                existing.update(
                    conn.execute(select(guests.c.name).where(guests.c.name.in_(chunk))).scalars()
                )
        return [n for n in names if n in existing]

    def get(self, name: str) -> GuestRecord:
        """The guest ``name``; raises :class:`GuestNotFound`."""
        with self._transaction(write=False) as conn:
            return GuestRecord.from_row(self._row(conn, name))

    def list(
        self, limit: int | None = None, after: str | None = None
    ) -> builtins.list[GuestRecord]:
        """Every guest, by name; with ``limit``, at most that many, and with ``after``, only
        those whose name sorts after it (a page: the next one starts after its last name)."""
        query = select(guests).order_by(guests.c.name)
        if after is not None:
            query = query.where(guests.c.name > after)
        if limit is not None:
            query = query.limit(limit)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).all()
        return [GuestRecord.from_row(row) for row in rows]

    def names_near(self, name: str, count: int) -> builtins.list[str]:
        """Guest names around ``name`` in sort order (see :func:`names_near`)."""
        with self._transaction(write=False) as conn:
            return names_near(conn, guests.c.name, name, count)

    def count(self) -> int:
        """How many guests are stored."""
        with self._transaction(write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(guests)).scalar_one())

    def update(
        self,
        name: str,
        expected_generation: int,
        *,
        reason: str,
        actor: str | None = None,
        state: str | Unset = UNSET,
        host: str | Unset | None = UNSET,
        machine: str | Unset = UNSET,
        pin_json: str | Unset = UNSET,
        fingerprint: str | Unset = UNSET,
        pending_json: str | Unset | None = UNSET,
        snapshots_json: str | Unset = UNSET,
    ) -> GuestRecord:
        """Change the given fields if the guest is still at ``expected_generation``.

        Compare-and-swap in one transaction: the generation goes up by one; a different pin
        (``pin_json`` and ``fingerprint`` change together) also writes a history row. Raises
        :class:`ConcurrentUpdate` when the guest is at another generation (someone else changed
        it since it was read), :class:`GuestNotFound`, or :class:`StoreError`; nothing is written
        then.
        """
        if isinstance(pin_json, Unset) != isinstance(fingerprint, Unset):
            raise ValueError("pin_json and fingerprint change together")
        if isinstance(host, str):
            check_name("host", host)
        given: dict[str, object] = {
            "state": state,
            "host": host,
            "machine": machine,
            "pin_json": pin_json,
            "pin_fingerprint": fingerprint,
            "pending_json": pending_json,
            "snapshots_json": snapshots_json,
        }
        changes = {k: v for k, v in given.items() if not isinstance(v, Unset)}
        if not changes:
            raise ValueError("update without any change")
        with self._transaction(write=True) as conn:
            old = self._row(conn, name)
            if old.generation != expected_generation:
                raise ConcurrentUpdate(name, expected_generation, old.generation)
            now = _now()
            done = conn.execute(
                update(guests)
                .where(guests.c.id == old.id, guests.c.generation == expected_generation)
                .values(**changes, generation=expected_generation + 1, updated=now)
            )
            if done.rowcount != 1:
                raise ConcurrentUpdate(name, expected_generation)
            pin_changed = (
                isinstance(pin_json, str)
                and isinstance(fingerprint, str)
                and (pin_json != old.pin_json or fingerprint != old.pin_fingerprint)
            )
            if pin_changed:
                conn.execute(
                    insert(cpu_history).values(
                        guest_id=old.id,
                        guest_name=name,
                        at=now,
                        actor=actor or default_actor(),
                        reason=reason,
                        old_fingerprint=old.pin_fingerprint,
                        new_fingerprint=fingerprint,
                        old_pin_json=old.pin_json,
                        new_pin_json=pin_json,
                    )
                )
            return GuestRecord.from_row(self._row(conn, name))

    def history(self, name: str) -> builtins.list[HistoryRecord]:
        """Every pin a guest of this name had, oldest first: each definition starts with its
        first pin, an undefined guest's history ends with its undefinition. Raises
        :class:`GuestNotFound` when no guest of this name was ever kept."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(cpu_history)
                .where(cpu_history.c.guest_name == name)
                .order_by(cpu_history.c.at, cpu_history.c.id)
            ).all()
            if not rows:
                self._row(conn, name)
        return [
            HistoryRecord(
                guest=name,
                at=_utc(row.at),
                actor=row.actor,
                reason=row.reason,
                old_fingerprint=row.old_fingerprint,
                new_fingerprint=row.new_fingerprint,
                old_pin_json=row.old_pin_json,
                new_pin_json=row.new_pin_json,
            )
            for row in rows
        ]

    def delete(
        self,
        name: str,
        expected_generation: int | None = None,
        *,
        keep_history: bool = False,
        reason: str = "undefine",
        actor: str | None = None,
    ) -> None:
        """Remove the guest (with ``expected_generation``: only if still at it), so its name is
        free. ``keep_history``: its CPU history stays, ended by a row for the removal (who, why,
        the last pin); otherwise the history goes with it."""
        with self._transaction(write=True) as conn:
            old = self._row(conn, name)
            if expected_generation is not None and old.generation != expected_generation:
                raise ConcurrentUpdate(name, expected_generation, old.generation)
            if keep_history:
                conn.execute(
                    insert(cpu_history).values(
                        guest_id=old.id,
                        guest_name=name,
                        at=_now(),
                        actor=actor or default_actor(),
                        reason=reason,
                        old_fingerprint=old.pin_fingerprint,
                        new_fingerprint=old.pin_fingerprint,
                        old_pin_json=old.pin_json,
                        new_pin_json=old.pin_json,
                    )
                )
            else:
                conn.execute(delete(cpu_history).where(cpu_history.c.guest_id == old.id))
            where = [guests.c.id == old.id]
            if expected_generation is not None:
                where.append(guests.c.generation == expected_generation)
            if conn.execute(delete(guests).where(*where)).rowcount != 1:
                raise ConcurrentUpdate(name, expected_generation or old.generation)
