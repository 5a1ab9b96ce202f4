"""The database schema as SQLAlchemy Core tables (the Alembic migrations must match it).

``guests`` holds one row per guest with its pin as a JSON document the store does not interpret
(stored as text, so PostgreSQL and SQLite keep it byte for byte), the pin's fingerprint, and a
``generation`` that every update increments: updates are compare-and-swap on it.
``cpu_history`` records every change of a guest's pin: when, who, why, old and new. It names its
guest and outlives it (r0006): an undefined guest's history stays for audit, its name is free.
``hosts``, ``host_snapshots``, ``pools`` and ``pool_members`` hold the fleet (see below).
Timestamps are UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

guests = Table(
    "guests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("state", String(32), nullable=False),
    Column("host", String(255), nullable=True),
    Column("machine", String(64), nullable=False),
    Column("pin_json", Text, nullable=False),
    Column("pin_fingerprint", String(128), nullable=False),
    Column("pending_json", Text, nullable=True),
    Column("snapshots_json", Text, nullable=False, server_default="[]"),
    Column("generation", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    # r0005: the domain XML the guest was defined from, as given (None for guest files)
    Column("definition", Text, nullable=True),
)

cpu_history = Table(
    "cpu_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "guest_id",
        Integer,
        ForeignKey("guests.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("guest_name", String(255), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("old_fingerprint", String(128), nullable=True),
    Column("new_fingerprint", String(128), nullable=False),
    Column("old_pin_json", Text, nullable=True),
    Column("new_pin_json", Text, nullable=False),
    Index("ix_cpu_history_guest_id_at", "guest_id", "at"),
    Index("ix_cpu_history_guest_name_at", "guest_name", "at"),
)

# -- hosts and pools (r0003) ---------------------------------------------------------------------
# ``hosts`` holds each host's current snapshot (a ``cpuver-host/*`` JSON document the store does
# not interpret); ``host_snapshots`` keeps every snapshot a host was ever added with, so a re-add
# refreshes the host and the old snapshot stays. A host may be in several pools.

hosts = Table(
    "hosts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("snapshot_json", Text, nullable=False),
    Column("added", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)

host_snapshots = Table(
    "host_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host_id", Integer, ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("snapshot_json", Text, nullable=False),
    Index("ix_host_snapshots_host_id_at", "host_id", "at"),
)

pools = Table(
    "pools",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    # r0004: goes up with every change of the pool's hosts (HostStore.generation)
    Column("generation", Integer, nullable=False, server_default="0"),
)

pool_members = Table(
    "pool_members",
    metadata,
    Column(
        "pool_id",
        Integer,
        ForeignKey("pools.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "host_id",
        Integer,
        ForeignKey("hosts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Index("ix_pool_members_host_id", "host_id"),
)
