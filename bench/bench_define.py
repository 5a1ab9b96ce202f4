"""(e) Define 10,000 guests into a fresh SQLite store: <= 10 s.

The whole define use case is timed, as ``cpuver domain define`` does it for each guest: resolve
its spec against the bundled QEMU 10.0 catalog (the specs cycle through every versioned model
name), pin the resolution (every feature the QEMU build knows on or off, signature, fingerprint),
serialise the pin, and store the guests with ``GuestStore.define_many`` in batches of 1,000, one
transaction each, which also writes each guest's first ``cpu_history`` row. Opening the store
(the Alembic migration of the new file) is included. For information: ``list()`` of all guests
and 1,000 ``get()`` calls afterwards.

Run alone: ``.venv/bin/python bench/bench_define.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import Result, status
from cpuver.api import open_catalog
from cpuver.catalog import Catalog, NameKind
from cpuver.domain.lifecycle import define
from cpuver.domain.pinning import pin
from cpuver.resolve import Resolver
from cpuver.store import GuestStore, NewGuest

GUESTS = 10_000
BATCH = 1_000
GOAL_S = 10.0
MACHINE = "pc-q35-10.0"


def specs(catalog: Catalog) -> list[str]:
    return [ref.name for ref in catalog.names() if ref.kind is NameKind.VERSIONED]


def guests(count: int, catalog: Catalog) -> list[NewGuest]:
    """Resolve, pin and serialise ``count`` guests, as ``domain define`` does for each."""
    resolver = Resolver(catalog, MACHINE, "kvm")
    names = specs(catalog)
    new = []
    for i in range(count):
        guest = define(f"guest-{i:05}", pin(resolver.resolve(names[i % len(names)]), catalog))
        document = json.dumps(guest.pin.to_json(), sort_keys=True)
        new.append(NewGuest(guest.name, guest.state, MACHINE, document, guest.pin.fingerprint))
    return new


def run(count: int = GUESTS) -> list[Result]:
    catalog = open_catalog("10.0")
    with tempfile.TemporaryDirectory(prefix="cpuver-bench-") as tmp:
        db = Path(tmp) / "cpuver.db"
        start = time.perf_counter()
        new = guests(count, catalog)
        pinned = time.perf_counter()
        store = GuestStore(f"sqlite:///{db}")
        store.migrate()
        migrated = time.perf_counter()
        store_open = migrated - pinned
        for first in range(0, count, BATCH):
            store.define_many(new[first : first + BATCH], actor="bench", reason="benchmark")
        elapsed = time.perf_counter() - start
        defining = time.perf_counter() - migrated
        pin_bytes = sum(len(g.pin_json) for g in new) / len(new)

        listed_start = time.perf_counter()
        listed = store.list()
        listed_s = time.perf_counter() - listed_start
        get_start = time.perf_counter()
        for guest in new[:: max(1, count // 1000)]:
            store.get(guest.name)
        gets = len(new[:: max(1, count // 1000)])
        get_us = (time.perf_counter() - get_start) / gets * 1e6
        store.close()
        size_mb = db.stat().st_size / 1e6
    assert len(listed) == count, f"list() returned {len(listed)} guests, expected {count}"

    return [
        Result(
            name=f"(e) define {count:,} guests: resolve, pin, store into SQLite",
            goal=f"<= {GOAL_S:.0f} s",
            figure=f"{elapsed:.2f} s ({elapsed / count * 1e6:.0f} µs per guest)",
            status=status(elapsed <= GOAL_S),
            details=[
                f"resolve + pin + serialise: {pinned - start:.2f} s; "
                f"{count:,} guests with a {pin_bytes / 1000:.1f} KB pin each, "
                f"{count // BATCH} transactions of define_many({BATCH:,}) + first history rows",
                f"open + Alembic migration of the new file: {store_open * 1e3:.0f} ms; "
                f"defining: {defining:.2f} s; database file {size_mb:.0f} MB",
                f"afterwards: list() of all {count:,} in {listed_s:.2f} s; "
                f"get() {get_us:.0f} µs each ({gets} calls)",
            ],
            numbers={
                "seconds": elapsed,
                "define_seconds": defining,
                "us_per_guest": defining / count * 1e6,
                "pin_bytes": pin_bytes,
                "list_seconds": listed_s,
                "get_us": get_us,
            },
        )
    ]


if __name__ == "__main__":
    for result in run():
        print(result.line())
        for detail in result.details:
            print(f"       {detail}")
