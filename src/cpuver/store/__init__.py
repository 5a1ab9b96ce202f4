"""Persistent guests and hosts: SQLAlchemy tables, repositories and Alembic migrations.

The store keeps guests as rows whose pin (and pending change) are JSON documents it does not
interpret; the domain layer owns their meaning. SQLite is the default (a file under the user's
data directory), PostgreSQL works through a URL (``postgresql+psycopg://...``). The schema is
created or upgraded with the packaged Alembic migrations on first use of a database.

Every update is compare-and-swap on the guest's ``generation``; a change of the pin writes a
``cpu_history`` row (when, who, why, old and new) in the same transaction.

Hosts and pools (:class:`HostStore`) live in the same database: each host's current snapshot,
every snapshot it was added with, and the pools it is in.

Errors raised here derive from :class:`StoreError`; database errors are wrapped in it, so callers
never need SQLAlchemy's exceptions, and their messages never show SQL, parameters, socket paths
or passwords (:class:`StoreUnavailable` when the database cannot be used right now). Every name
is checked with :func:`cpuver.names.check_name` before it reaches SQL.
"""

from __future__ import annotations

from cpuver.errors import CpuverError


class StoreError(CpuverError):
    """The guest store cannot do what was asked (database errors are wrapped in it)."""


class StoreUnavailable(StoreError):
    """The database cannot be used right now (server down, file locked, disk full, read-only):
    nothing was written, and the same request may work later. The message is one line and
    names no SQL, no parameters, no socket path and no password."""


class GuestNotFound(StoreError, LookupError):
    """No guest of that name in the store."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no guest named {name!r}")


class GuestExists(StoreError):
    """A guest of that name is already defined."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a guest named {name!r} already exists")


class ConcurrentUpdate(StoreError):
    """The guest changed since it was read: its generation is no longer the expected one."""

    def __init__(self, name: str, expected: int, actual: int | None = None) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        now = f" (it is now at generation {actual})" if actual is not None else ""
        super().__init__(
            f"guest {name!r} was changed concurrently: expected generation {expected}{now}; "
            "read it again and retry"
        )


# The repositories need the errors above, so they are imported after them.
from cpuver.store.hosts import (  # noqa: E402
    HostNotFound,
    HostRecord,
    HostStore,
    PoolNotFound,
    PoolRecord,
    SnapshotRecord,
)
from cpuver.store.repository import (  # noqa: E402
    UNSET,
    GuestRecord,
    GuestStore,
    HistoryRecord,
    NewGuest,
    Unset,
    default_url,
    store_exists,
)

__all__ = [
    "UNSET",
    "ConcurrentUpdate",
    "GuestExists",
    "GuestNotFound",
    "GuestRecord",
    "GuestStore",
    "HistoryRecord",
    "HostNotFound",
    "HostRecord",
    "HostStore",
    "NewGuest",
    "PoolNotFound",
    "PoolRecord",
    "SnapshotRecord",
    "StoreError",
    "StoreUnavailable",
    "Unset",
    "default_url",
    "store_exists",
]
