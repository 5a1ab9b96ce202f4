"""The host repository: hosts with their current snapshot, snapshot history, pools.

A host is stored under its name with the snapshot it was last added with (a ``cpuver-host/*``
JSON document the store does not interpret). Adding a host again refreshes it: the new snapshot
becomes current and every snapshot it was ever added with stays in ``host_snapshots``. Pools are
named sets of hosts; a host may be in several, and adding it again only adds memberships.

:class:`HostStore` uses the same database as :class:`~cpuver.store.GuestStore` (same URL
conventions, same default SQLite file, same engine set-up and migrations): it opens one and runs
its transactions through it. Every method is one transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from cpuver.names import check_name
from cpuver.store import StoreError
from cpuver.store.repository import GuestStore, _now, _utc, names_near
from cpuver.store.tables import host_snapshots, hosts, pool_members, pools

_GENERATION = "SELECT generation FROM pools WHERE name = ?"
ADD_ATTEMPTS = 3
"""Tries of :meth:`HostStore.add` when a concurrent writer inserts the same host or pool first."""


class HostNotFound(StoreError, LookupError):
    """No host of that name in the store."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no host named {name!r}")


class PoolNotFound(StoreError, LookupError):
    """No pool of that name in the store."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no pool named {name!r}")


@dataclass(frozen=True)
class HostRecord:
    """One host as stored: its current snapshot (as given) and the pools it is in, by name."""

    name: str
    snapshot_json: str
    pools: tuple[str, ...]
    added: datetime
    updated: datetime
    snapshots: int
    """How many snapshots the host was added with (1 for a host added once)."""


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot a host was added with, and when."""

    host: str
    at: datetime
    snapshot_json: str


@dataclass(frozen=True)
class PoolRecord:
    """A pool and its hosts, by name."""

    name: str
    hosts: tuple[str, ...]


class HostStore:
    """Hosts and pools in a database given by URL (default: the guest store's SQLite file)."""

    def __init__(self, url: str | None = None) -> None:
        self._db = GuestStore(url)
        self.url = self._db.url

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HostStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def migrate(self) -> bool:
        """Create or upgrade the schema to the newest revision; True when anything ran."""
        return self._db.migrate()

    # -- API -------------------------------------------------------------------------------------

    def add(self, snapshot_json: str, host_name: str, pools: Sequence[str] = ()) -> HostRecord:
        """Store ``host_name`` with ``snapshot_json`` and put it into ``pools`` (created when
        new). A known host is refreshed: the snapshot becomes its current one (the old ones stay
        in :meth:`history`; the same snapshot again adds no history row) and it joins ``pools``
        besides the pools it is in already.

        Two writers adding the same new host (or pool, or membership) at once both succeed: the
        one whose insert loses (PostgreSQL: a unique violation; nothing of it is written) tries
        again and then finds the row, as if it had come second.
        """
        return self.add_many([(snapshot_json, host_name)], pools)[0]

    def add_many(
        self,
        hosts_: Sequence[tuple[str, str]],
        pools: Sequence[str] = (),
        progress: Callable[[int, int, str], None] | None = None,
    ) -> builtins.list[HostRecord]:
        """:meth:`add` of every ``(snapshot_json, host_name)`` in one transaction: all of them
        are stored, or none (an error, a kill, a full disk). ``progress(done, total, host)`` is
        called after each host is written (before the commit)."""
        for _snapshot, name in hosts_:
            check_name("host", name)
        for pool in pools:
            check_name("pool", pool)
        attempt = 1
        while True:
            try:
                return self._add(hosts_, pools, progress)
            except StoreError as err:
                if not isinstance(err.__cause__, IntegrityError) or attempt == ADD_ATTEMPTS:
                    raise
                attempt += 1

    def _add(
        self,
        hosts_: Sequence[tuple[str, str]],
        pools: Sequence[str],
        progress: Callable[[int, int, str], None] | None,
    ) -> builtins.list[HostRecord]:
        now = _now()
        with self._db._transaction(write=True) as conn:
            pool_ids = self._pool_ids(conn, pools)
            host_ids: builtins.list[int] = []
            changed: builtins.list[int] = []
            for done, (snapshot_json, host_name) in enumerate(hosts_, 1):
                row = conn.execute(
                    select(hosts.c.id, hosts.c.snapshot_json).where(hosts.c.name == host_name)
                ).one_or_none()
                if row is None:
                    host_id = conn.execute(
                        insert(hosts).returning(hosts.c.id),
                        {"name": host_name, "snapshot_json": snapshot_json, "added": now,
                         "updated": now},
                    ).scalar_one()  # fmt: skip
                elif row.snapshot_json != snapshot_json:
                    host_id = row.id
                    conn.execute(
                        update(hosts)
                        .where(hosts.c.id == host_id)
                        .values(snapshot_json=snapshot_json, updated=now)
                    )
                else:
                    host_id = row.id  # the same snapshot again: nothing new to keep
                if row is None or row.snapshot_json != snapshot_json:
                    conn.execute(
                        insert(host_snapshots).values(
                            host_id=host_id, at=now, snapshot_json=snapshot_json
                        )
                    )
                    changed.append(host_id)
                for pool_id in pool_ids:
                    member = conn.execute(
                        select(pool_members.c.host_id).where(
                            pool_members.c.pool_id == pool_id, pool_members.c.host_id == host_id
                        )
                    ).one_or_none()
                    if member is None:
                        conn.execute(insert(pool_members).values(pool_id=pool_id, host_id=host_id))
                        changed.append(host_id)
                host_ids.append(host_id)
                if progress is not None:
                    progress(done, len(hosts_), host_name)
            self._changed(conn, changed)
            by_id = {record_id: record for record_id, record in self._records_by_id(conn, host_ids)}
            return [by_id[host_id] for host_id in host_ids]

    def remove(self, name: str) -> None:
        """Forget the host, its snapshot history and its pool memberships; a pool left without
        hosts goes too."""
        with self._db._transaction(write=True) as conn:
            host_id = self._host_id(conn, name)
            pool_ids = builtins.list(
                conn.execute(
                    select(pool_members.c.pool_id).where(pool_members.c.host_id == host_id)
                ).scalars()
            )
            self._changed(conn, [host_id])
            conn.execute(delete(hosts).where(hosts.c.id == host_id))
            for pool_id in pool_ids:
                left = conn.execute(
                    select(pool_members.c.host_id).where(pool_members.c.pool_id == pool_id).limit(1)
                ).first()
                if left is None:
                    conn.execute(delete(pools).where(pools.c.id == pool_id))

    def generation(self, pool: str) -> int:
        """The pool's change counter: it goes up in the transaction of every change of its
        hosts (added, refreshed, removed), so a process can keep answers about the pool and
        know, with this one cheap read, when another process changed it."""
        check_name("pool", pool)
        found = self._db.read_one(_GENERATION, pool)
        if found is None:
            raise PoolNotFound(pool)
        return int(found)

    def count(self) -> int:
        """How many hosts are stored."""
        with self._db._transaction(write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(hosts)).scalar_one())

    def names_near(
        self, kind: Literal["host", "pool"], name: str, count: int
    ) -> builtins.list[str]:
        """Host or pool names around ``name`` in sort order (see
        :func:`~cpuver.store.repository.names_near`)."""
        column = hosts.c.name if kind == "host" else pools.c.name
        with self._db._transaction(write=False) as conn:
            return names_near(conn, column, name, count)

    def get(self, name: str) -> HostRecord:
        """The host ``name``; raises :class:`HostNotFound`."""
        with self._db._transaction(write=False) as conn:
            return self._records(conn, [self._host_id(conn, name)])[0]

    def list(
        self, pool: str | None = None, limit: int | None = None, after: str | None = None
    ) -> builtins.list[HostRecord]:
        """Every host (of ``pool``, when given: :class:`PoolNotFound` if there is none), by name;
        with ``limit`` at most that many, with ``after`` only those whose name sorts after it."""
        with self._db._transaction(write=False) as conn:
            query = select(hosts.c.id).order_by(hosts.c.name)
            if pool is not None:
                check_name("pool", pool)
                pool_id = conn.execute(select(pools.c.id).where(pools.c.name == pool)).scalar()
                if pool_id is None:
                    raise PoolNotFound(pool)
                query = query.join(pool_members, pool_members.c.host_id == hosts.c.id).where(
                    pool_members.c.pool_id == pool_id
                )
            if after is not None:
                query = query.where(hosts.c.name > after)
            if limit is not None:
                query = query.limit(limit)
            return self._records(conn, builtins.list(conn.execute(query).scalars()))

    def history(self, name: str) -> builtins.list[SnapshotRecord]:
        """Every snapshot the host was added with, oldest first (the last one is current)."""
        with self._db._transaction(write=False) as conn:
            host_id = self._host_id(conn, name)
            rows = conn.execute(
                select(host_snapshots.c.at, host_snapshots.c.snapshot_json)
                .where(host_snapshots.c.host_id == host_id)
                .order_by(host_snapshots.c.at, host_snapshots.c.id)
            ).all()
        return [SnapshotRecord(name, _utc(row.at), row.snapshot_json) for row in rows]

    def pools(
        self, limit: int | None = None, after: str | None = None
    ) -> builtins.list[PoolRecord]:
        """Every pool with its hosts, by name (a page of them with ``limit`` and ``after``)."""
        with self._db._transaction(write=False) as conn:
            chosen = select(pools.c.id).order_by(pools.c.name)
            if after is not None:
                chosen = chosen.where(pools.c.name > after)
            if limit is not None:
                chosen = chosen.limit(limit)
            ids = builtins.list(conn.execute(chosen).scalars())
            rows = conn.execute(
                select(pools.c.name.label("pool"), hosts.c.name.label("host"))
                .select_from(pools)
                .outerjoin(pool_members, pool_members.c.pool_id == pools.c.id)
                .outerjoin(hosts, hosts.c.id == pool_members.c.host_id)
                .where(pools.c.id.in_(ids))
            ).all()
        members: dict[str, builtins.list[str]] = {}
        for row in rows:
            members.setdefault(row.pool, [])
            if row.host is not None:
                members[row.pool].append(row.host)
        return [PoolRecord(name, tuple(sorted(members[name]))) for name in sorted(members)]

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _changed(conn: Connection, host_ids: builtins.list[int]) -> None:
        """Count a change in every pool these hosts are in (see :meth:`generation`)."""
        for start in range(0, len(host_ids), 500):
            chunk = sorted(set(host_ids[start : start + 500]))
            if chunk:
                members = select(pool_members.c.pool_id).where(pool_members.c.host_id.in_(chunk))
                conn.execute(
                    update(pools)
                    .where(pools.c.id.in_(members))
                    .values(generation=pools.c.generation + 1)
                )

    @staticmethod
    def _host_id(conn: Connection, name: str) -> int:
        check_name("host", name)
        host_id = conn.execute(select(hosts.c.id).where(hosts.c.name == name)).scalar()
        if host_id is None:
            raise HostNotFound(name)
        return int(host_id)

    @staticmethod
    def _pool_ids(conn: Connection, names: Sequence[str]) -> builtins.list[int]:
        """The ids of the pools ``names``, creating those that do not exist yet."""
        ids = []
        for name in dict.fromkeys(names):
            pool_id = conn.execute(select(pools.c.id).where(pools.c.name == name)).scalar()
            if pool_id is None:
                pool_id = conn.execute(
                    insert(pools).returning(pools.c.id), {"name": name}
                ).scalar_one()
            ids.append(int(pool_id))
        return ids

    @classmethod
    def _records(cls, conn: Connection, host_ids: builtins.list[int]) -> builtins.list[HostRecord]:
        """The hosts ``host_ids`` with their pools and snapshot counts, by name."""
        return sorted(
            (record for _id, record in cls._records_by_id(conn, host_ids)),
            key=lambda record: record.name,
        )

    @staticmethod
    def _records_by_id(
        conn: Connection, host_ids: builtins.list[int]
    ) -> builtins.list[tuple[int, HostRecord]]:
        """The hosts ``host_ids`` with their pools and snapshot counts, with their ids."""
        if not host_ids:
            return []
        found: builtins.list[Row[Any]] = []
        memberships: dict[int, builtins.list[str]] = {}
        counts: dict[int, int] = {}
        for start in range(0, len(host_ids), 500):
            chunk = host_ids[start : start + 500]
            found += conn.execute(select(hosts).where(hosts.c.id.in_(chunk))).all()
            for host_id, pool in conn.execute(
                select(pool_members.c.host_id, pools.c.name)
                .join(pools, pools.c.id == pool_members.c.pool_id)
                .where(pool_members.c.host_id.in_(chunk))
            ):
                memberships.setdefault(host_id, []).append(pool)
            for host_id, count in conn.execute(
                select(host_snapshots.c.host_id, func.count())
                .where(host_snapshots.c.host_id.in_(chunk))
                .group_by(host_snapshots.c.host_id)
            ):
                counts[host_id] = int(count)
        return [
            (
                row.id,
                HostRecord(
                    name=row.name,
                    snapshot_json=row.snapshot_json,
                    pools=tuple(sorted(memberships.get(row.id, []))),
                    added=_utc(row.added),
                    updated=_utc(row.updated),
                    snapshots=counts.get(row.id, 0),
                ),
            )
            for row in found
        ]
