"""Creating and upgrading the schema with Alembic, configured in code (there is no alembic.ini).

The migrations live in the package (``cpuver/store/migrations``); :func:`upgrade` brings a
database to the newest revision inside one transaction and is a cheap no-op when it is there
already, so the store runs it on first use of every database.

A new revision after a change of :mod:`cpuver.store.tables` (compared with a database at head)::

    python -c 'from alembic import command; from sqlalchemy import create_engine
    from cpuver.store.schema import alembic_config
    with create_engine("sqlite:////tmp/head.db").begin() as c:
        command.upgrade(alembic_config(c), "head")
        command.revision(alembic_config(c), "what changed", autogenerate=True, rev_id="r0002")'

then review ``migrations/versions/r0002_what_changed.py``, ``ruff format`` and
``ruff check --fix`` it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
HEAD = "r0006"
"""The newest revision in ``migrations/versions`` (a test checks it against Alembic's view), so
opening an up-to-date database needs no Alembic import (about 100 ms)."""
MIGRATION_LOCK = 0x63707576  # "cpuv": PostgreSQL advisory lock key held while migrating


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the store; ``connection`` is the one migrations run on."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this cpuver, as Alembic finds it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revision in {MIGRATIONS}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: no schema yet)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(version) if version is not None else None


def upgrade(connection: Connection) -> bool:
    """Migrate the database of ``connection`` to the head revision; True when anything ran.

    Runs in the caller's transaction: nothing is half-applied when it fails. Two processes
    opening a new database at once take turns (SQLite: the caller's ``BEGIN IMMEDIATE``;
    PostgreSQL: a transaction-scoped advisory lock).
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    if current_revision(connection) == HEAD:
        return False
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
    return True
