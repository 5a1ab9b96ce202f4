"""Alembic migrations of the cpuver store (run programmatically by :mod:`cpuver.store.schema`)."""
