"""cpuver.store.HostStore: hosts, snapshot history and pools, in SQLite and PostgreSQL.

The ``url`` fixture (and the throwaway PostgreSQL cluster behind it) is tests/postgres.py's:
every test that takes it runs once per database (``[postgresql]`` skips without PostgreSQL,
except when ``CI=true``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect

from cpuver.errors import CpuverError
from cpuver.store import (
    GuestStore,
    HostNotFound,
    HostStore,
    PoolNotFound,
    PoolRecord,
)
from postgres import url_fixture  # noqa: F401  (the url fixture)


def snapshot(name: str, *features: str) -> str:
    return json.dumps({"schema": "cpuver-host/1", "host": name,
                       "accelerators": {"kvm": {"features": sorted(features)}}})  # fmt: skip


@pytest.fixture
def store(url: str) -> Iterator[HostStore]:
    with HostStore(url) as opened:
        yield opened


def test_migrations_to_head_create_the_host_tables(url: str) -> None:
    HostStore(url).migrate()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert {"hosts", "host_snapshots", "pools", "pool_members", "guests"} <= set(
                inspect(conn).get_table_names()
            )
    finally:
        engine.dispose()


def test_added_host_reads_back_with_its_snapshot_and_pools(store: HostStore) -> None:
    added = store.add(snapshot("hv1", "sse4.2"), "hv1", ["rack3", "gold"])
    got = store.get("hv1")
    assert got == added
    assert (got.name, got.snapshot_json, got.pools) == ("hv1", snapshot("hv1", "sse4.2"),
                                                         ("gold", "rack3"))  # fmt: skip
    assert got.added == got.updated
    assert got.added.tzinfo is not None
    assert got.snapshots == 1


def test_re_adding_refreshes_the_snapshot_and_keeps_the_old_one_in_history(
    store: HostStore,
) -> None:
    store.add(snapshot("hv1", "hle", "rtm"), "hv1", ["rack3"])
    refreshed = store.add(snapshot("hv1"), "hv1", ["rack3"])
    assert refreshed.snapshot_json == snapshot("hv1")
    assert refreshed.snapshots == 2
    assert refreshed.updated >= refreshed.added
    history = store.history("hv1")
    assert [h.snapshot_json for h in history] == [snapshot("hv1", "hle", "rtm"), snapshot("hv1")]
    assert history[0].at <= history[1].at
    assert len(store.list()) == 1


def test_re_adding_into_another_pool_keeps_the_first_membership(store: HostStore) -> None:
    store.add(snapshot("hv1"), "hv1", ["rack3"])
    assert store.add(snapshot("hv1"), "hv1", ["gold"]).pools == ("gold", "rack3")


def test_a_host_can_be_in_several_pools_and_list_filters_by_pool(store: HostStore) -> None:
    store.add(snapshot("hv1"), "hv1", ["rack3", "gold"])
    store.add(snapshot("hv2"), "hv2", ["rack3"])
    store.add(snapshot("hv3"), "hv3", ["gold"])
    assert [h.name for h in store.list()] == ["hv1", "hv2", "hv3"]
    assert [h.name for h in store.list("rack3")] == ["hv1", "hv2"]
    assert [h.name for h in store.list("gold")] == ["hv1", "hv3"]
    assert store.pools() == [
        PoolRecord("gold", ("hv1", "hv3")),
        PoolRecord("rack3", ("hv1", "hv2")),
    ]


def test_remove_forgets_the_host_its_history_and_memberships(store: HostStore) -> None:
    store.add(snapshot("hv1", "hle"), "hv1", ["rack3"])
    store.add(snapshot("hv1"), "hv1", ["rack3", "solo"])
    store.add(snapshot("hv2"), "hv2", ["rack3"])
    store.remove("hv1")
    assert [h.name for h in store.list()] == ["hv2"]
    assert store.pools() == [PoolRecord("rack3", ("hv2",))]  # "solo" had no other host
    store.add(snapshot("hv1"), "hv1", ["rack3"])  # the name is free again, with a fresh history
    assert len(store.history("hv1")) == 1


def test_unknown_host_raises_host_not_found(store: HostStore) -> None:
    store.add(snapshot("hv1"), "hv1", ["rack3"])
    for call in (lambda: store.get("nope"), lambda: store.history("nope"),
                 lambda: store.remove("nope")):  # fmt: skip
        with pytest.raises(HostNotFound, match="nope") as caught:
            call()
        assert isinstance(caught.value, CpuverError)
        assert isinstance(caught.value, LookupError)


def test_unknown_pool_raises_pool_not_found(store: HostStore) -> None:
    with pytest.raises(PoolNotFound, match="rack9"):
        store.list("rack9")


def test_hosts_and_guests_share_one_database(url: str) -> None:
    with HostStore(url) as hosts:
        hosts.add(snapshot("hv1"), "hv1", ["rack3"])
    with GuestStore(url) as guests:
        assert guests.list() == []
    with HostStore(url) as again:
        assert [h.name for h in again.list()] == ["hv1"]


def test_a_database_at_r0002_is_upgraded_to_hold_hosts(url: str) -> None:
    from alembic import command

    from cpuver.store.schema import alembic_config

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "r0002")
    finally:
        engine.dispose()
    with HostStore(url) as hosts:
        assert hosts.migrate() is True  # r0002 -> head
        hosts.add(snapshot("hv1"), "hv1", ["rack3"])
        assert [h.name for h in hosts.list("rack3")] == ["hv1"]
