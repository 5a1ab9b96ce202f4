"""Alembic environment: runs the migrations on the connection the store hands over.

There is no alembic.ini: :func:`cpuver.store.schema.alembic_config` builds the configuration in
code and puts an open connection into ``config.attributes["connection"]``; the caller owns the
transaction. Without a connection (``alembic`` command line with ``-x url=...`` or
``sqlalchemy.url``) an engine is created from the URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from cpuver.store.tables import metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url for the cpuver migrations")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()


main()
