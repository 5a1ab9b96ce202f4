"""cpuver.store: guests in SQLite (always) and PostgreSQL (when its server binaries are installed).

Every test that takes ``url`` (tests/postgres.py) runs once per database: ``[sqlite]`` on a file
in ``tmp_path`` and ``[postgresql]`` on a fresh database of the session's throwaway cluster.
Without PostgreSQL (or psycopg) the ``[postgresql]`` cases skip, except when ``CI=true``: then
they fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from cpuver.errors import CpuverError
from cpuver.store import (
    ConcurrentUpdate,
    GuestExists,
    GuestNotFound,
    GuestStore,
    NewGuest,
    StoreError,
    default_url,
)
from cpuver.store.schema import HEAD, alembic_config, head_revision
from cpuver.store.tables import metadata
from postgres import url_fixture  # noqa: F401  (the url fixture)

PIN_1 = json.dumps({"model": "Haswell-v4", "features": {"pcid": True}})
PIN_2 = json.dumps({"model": "Haswell-v4", "features": {"pcid": False}})


@pytest.fixture
def store(url: str) -> Iterator[GuestStore]:
    with GuestStore(url) as opened:
        yield opened


def define(store: GuestStore, name: str = "web1", pin: str = PIN_1, fp: str = "fp-1") -> None:
    store.define(name, "defined", "pc-q35-10.0", pin, fp, actor="alice", reason="new guest")


# -- schema ---------------------------------------------------------------------------------------


def test_fresh_database_gets_its_schema_from_alembic(url: str) -> None:
    with GuestStore(url) as store:
        assert store.list() == []
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert {"alembic_version", "guests", "cpu_history"} <= set(
                inspect(conn).get_table_names()
            )
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
    finally:
        engine.dispose()


def test_head_constant_is_alembics_newest_revision() -> None:
    assert head_revision() == HEAD


def test_tables_match_the_migrations(url: str) -> None:
    GuestStore(url).migrate()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_second_open_does_not_migrate_again(url: str) -> None:
    assert GuestStore(url).migrate() is True
    assert GuestStore(url).migrate() is False


def test_opening_an_up_to_date_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cpuver.db'}"
    GuestStore(url).migrate()
    code = (
        "import sys; from cpuver.store import GuestStore; "
        f"GuestStore({url!r}).list(); print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_url_is_a_sqlite_file_under_xdg_data_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_url() == f"sqlite:///{tmp_path / 'data' / 'cpuver' / 'cpuver.db'}"
    with GuestStore() as store:
        define(store)
    assert (tmp_path / "data" / "cpuver" / "cpuver.db").is_file()


def test_default_url_falls_back_to_local_share(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_url() == f"sqlite:///{tmp_path / '.local' / 'share' / 'cpuver' / 'cpuver.db'}"


# -- define, get, list ----------------------------------------------------------------------------


def test_defined_guest_reads_back_at_generation_1(store: GuestStore) -> None:
    created = store.define(
        "web1", "defined", "pc-q35-10.0", PIN_1, "fp-1", actor="alice", reason="new guest",
        host="hv1", pending_json='{"spec": "Haswell"}',
    )  # fmt: skip
    got = store.get("web1")
    assert got == created
    assert (got.name, got.state, got.host, got.machine) == ("web1", "defined", "hv1", "pc-q35-10.0")
    assert (got.pin_json, got.fingerprint, got.pending_json) == (
        PIN_1,
        "fp-1",
        '{"spec": "Haswell"}',
    )
    assert got.generation == 1
    assert got.created == got.updated
    assert got.created.tzinfo is not None


def test_the_definition_a_guest_came_from_is_kept_byte_for_byte(store: GuestStore) -> None:
    text = "<domain type='qemu'>\n  <name>web1</name> <!-- mine -->\n</domain>\n"
    store.define("web1", "shutoff", "pc-q35-10.0", PIN_1, "fp-1", reason="r", definition=text)
    store.define("web2", "shutoff", "pc-q35-10.0", PIN_1, "fp-1", reason="r")
    assert (store.get("web1").definition, store.get("web2").definition) == (text, None)


def test_list_returns_every_guest_by_name(store: GuestStore) -> None:
    for name in ("db2", "web1", "app3"):
        define(store, name)
    assert [g.name for g in store.list()] == ["app3", "db2", "web1"]


def test_define_many_stores_all_guests_in_one_call(store: GuestStore) -> None:
    new = [NewGuest(f"g{i:02}", "defined", "pc-q35-10.0", PIN_1, f"fp-{i}") for i in range(20)]
    assert store.define_many(new, actor="bulk", reason="import") == 20
    assert [g.fingerprint for g in store.list()] == [f"fp-{i}" for i in range(20)]
    assert store.history("g07")[0].actor == "bulk"


# -- refusals -------------------------------------------------------------------------------------


def test_duplicate_name_is_refused_and_the_first_guest_stays(store: GuestStore) -> None:
    define(store, "web1", PIN_1, "fp-1")
    with pytest.raises(GuestExists, match="web1"):
        define(store, "web1", PIN_2, "fp-2")
    assert store.get("web1").fingerprint == "fp-1"
    assert len(store.list()) == 1


def test_define_many_with_a_taken_name_stores_none(store: GuestStore) -> None:
    define(store, "b")
    new = [NewGuest(n, "defined", "pc-q35-10.0", PIN_1, "fp") for n in ("a", "b", "c")]
    with pytest.raises(GuestExists, match="'b'"):
        store.define_many(new, reason="import")
    assert [g.name for g in store.list()] == ["b"]


def test_unknown_guest_raises_guest_not_found(store: GuestStore) -> None:
    define(store, "web1")
    calls = [
        lambda: store.get("nope"),
        lambda: store.update("nope", 1, state="running", reason="start"),
        lambda: store.history("nope"),
        lambda: store.delete("nope"),
    ]
    for call in calls:
        with pytest.raises(GuestNotFound, match="nope") as caught:
            call()
        assert isinstance(caught.value, CpuverError)
        assert isinstance(caught.value, LookupError)


def test_update_needs_pin_and_fingerprint_together(store: GuestStore) -> None:
    define(store)
    with pytest.raises(ValueError, match="together"):
        store.update("web1", 1, pin_json=PIN_2, reason="upgrade")


# -- compare-and-swap -----------------------------------------------------------------------------


def test_update_changes_fields_and_bumps_generation(store: GuestStore) -> None:
    define(store)
    before = store.get("web1")
    after = store.update("web1", 1, state="running", host="hv2", reason="started")
    assert (after.state, after.host, after.generation) == ("running", "hv2", 2)
    assert after.pin_json == before.pin_json
    assert after.updated >= before.updated
    assert store.get("web1") == after


def test_new_guest_has_no_snapshots_and_an_update_records_them(store: GuestStore) -> None:
    define(store, "web1")
    assert store.get("web1").snapshots_json == "[]"
    store.update("web1", 1, snapshots_json='["before-upgrade"]', reason="snapshot")
    assert store.get("web1").snapshots_json == '["before-upgrade"]'


def test_update_without_pin_change_writes_no_history(store: GuestStore) -> None:
    define(store)
    store.update("web1", 1, state="running", reason="started")
    store.update("web1", 2, pin_json=PIN_1, fingerprint="fp-1", reason="same pin again")
    assert len(store.history("web1")) == 1


def test_stale_generation_raises_concurrent_update(store: GuestStore) -> None:
    define(store)
    store.update("web1", 1, state="running", reason="started")
    with pytest.raises(ConcurrentUpdate, match="expected generation 1") as caught:
        store.update("web1", 1, state="stopped", reason="stopped")
    assert caught.value.actual == 2
    assert store.get("web1").state == "running"


def test_concurrent_updates_of_one_generation_one_wins_one_history_row(url: str) -> None:
    with GuestStore(url) as setup:
        define(setup)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def change(who: str) -> None:
        # each thread has its own store (own connections), as two processes would
        with GuestStore(url) as mine:
            mine.get("web1")
            barrier.wait()
            try:
                outcomes[who] = mine.update(
                    "web1", 1, pin_json=f'{{"by": "{who}"}}', fingerprint=f"fp-{who}",
                    actor=who, reason=f"{who} upgrades",
                )  # fmt: skip
            except ConcurrentUpdate as err:
                outcomes[who] = err

    threads = [threading.Thread(target=change, args=(who,)) for who in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    lost = [who for who, out in outcomes.items() if isinstance(out, ConcurrentUpdate)]
    won = [who for who in outcomes if who not in lost]
    assert len(won) == 1 and len(lost) == 1, outcomes

    with GuestStore(url) as check:
        guest = check.get("web1")
        assert (guest.generation, guest.fingerprint) == (2, f"fp-{won[0]}")
        changes = [h for h in check.history("web1") if h.old_fingerprint is not None]
    assert len(changes) == 1
    assert (changes[0].actor, changes[0].new_fingerprint) == (won[0], f"fp-{won[0]}")


def test_failure_in_the_middle_of_an_update_leaves_no_change(store: GuestStore) -> None:
    define(store)
    before = store.get("web1")
    # The guests row is updated first; the history row then violates NOT NULL (reason), so the
    # transaction fails after its first write and must roll it back.
    with pytest.raises(StoreError) as caught:
        store.update("web1", 1, pin_json=PIN_2, fingerprint="fp-2", reason=None)  # type: ignore[arg-type]
    assert not isinstance(caught.value, ConcurrentUpdate)
    assert store.get("web1") == before
    assert len(store.history("web1")) == 1
    # and the guest is still updatable at its old generation
    assert store.update("web1", 1, pin_json=PIN_2, fingerprint="fp-2", reason="ok").generation == 2


# -- history, delete ------------------------------------------------------------------------------


def test_history_records_who_when_why_and_old_and_new_pin(
    store: GuestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "carol")
    start = datetime.now(UTC)
    store.define("web1", "defined", "pc-q35-10.0", PIN_1, "fp-1", reason="new guest")
    store.update("web1", 1, pin_json=PIN_2, fingerprint="fp-2", actor="dave", reason="drop pcid")
    end = datetime.now(UTC)

    first, second = store.history("web1")
    assert (first.actor, first.reason) == ("carol", "new guest")
    assert (first.old_fingerprint, first.new_fingerprint) == (None, "fp-1")
    assert (first.old_pin_json, first.new_pin_json) == (None, PIN_1)
    assert (second.actor, second.reason) == ("dave", "drop pcid")
    assert (second.old_fingerprint, second.new_fingerprint) == ("fp-1", "fp-2")
    assert (second.old_pin_json, second.new_pin_json) == (PIN_1, PIN_2)
    assert start <= first.at <= second.at <= end
    assert second.at == store.get("web1").updated


def test_delete_removes_the_guest_and_its_history(store: GuestStore) -> None:
    define(store, "web1")
    define(store, "web2")
    store.delete("web1")
    assert [g.name for g in store.list()] == ["web2"]
    define(store, "web1", PIN_2, "fp-2")  # the name is free again, with a fresh history
    assert [h.new_fingerprint for h in store.history("web1")] == ["fp-2"]


def test_undefine_keeping_history_frees_the_name_and_keeps_the_audit_trail(
    store: GuestStore,
) -> None:
    define(store, "web1")
    store.update("web1", 1, pin_json=PIN_2, fingerprint="fp-2", reason="update-cpu")
    store.delete("web1", keep_history=True, reason="undefine", actor="bob")
    assert store.list() == []
    kept = store.history("web1")
    assert [(h.reason, h.new_fingerprint) for h in kept] == [
        ("new guest", "fp-1"),
        ("update-cpu", "fp-2"),
        ("undefine", "fp-2"),
    ]
    assert kept[-1].actor == "bob"
    define(store, "web1", PIN_1, "fp-3")
    assert [h.new_fingerprint for h in store.history("web1")] == ["fp-1", "fp-2", "fp-2", "fp-3"]


def test_history_of_a_name_never_defined_is_not_found(store: GuestStore) -> None:
    with pytest.raises(GuestNotFound):
        store.history("nope")


def test_migration_to_r0006_names_the_guest_of_every_history_row(url: str) -> None:
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as conn:  # a database as an older cpuver (r0005) left it
            command.upgrade(alembic_config(conn), "r0005")
            conn.exec_driver_sql(
                "INSERT INTO guests (name, state, machine, pin_json, pin_fingerprint, "
                "generation, created, updated) VALUES ('web1', 'shutoff', 'pc-q35-10.0', "
                "'{}', 'fp-1', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
            conn.exec_driver_sql(
                "INSERT INTO cpu_history (guest_id, at, actor, reason, new_fingerprint, "
                "new_pin_json) SELECT id, CURRENT_TIMESTAMP, 'alice', 'define', 'fp-1', '{}' "
                "FROM guests"
            )
    finally:
        engine.dispose()
    with GuestStore(url) as store:
        assert [(h.guest, h.reason) for h in store.history("web1")] == [("web1", "define")]


def test_delete_with_stale_generation_is_refused(store: GuestStore) -> None:
    define(store)
    store.update("web1", 1, state="running", reason="started")
    with pytest.raises(ConcurrentUpdate):
        store.delete("web1", expected_generation=1)
    assert store.get("web1").generation == 2


def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError):
        GuestStore(f"sqlite:///{tmp_path / 'file' / 'sub' / 'cpuver.db'}").list()
