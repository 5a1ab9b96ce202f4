"""(e) Define 10,000 guests into a fresh SQLite store through the repository API: <= 10 s.

Each guest carries a realistic pin of about 6 KB: the JSON document a pinned guest keeps (spec,
model, machine type, QEMU release, accelerator, signature, how it was resolved, and all 389
features the bundled catalog knows, split into on and off at random per guest) with its SHA-256
fingerprint. The documents are built before the clock starts. Timed: opening the store (the
Alembic migration of the new file) and ``GuestStore.define_many`` in batches of 1,000 guests, one
transaction each, which also writes each guest's first ``cpu_history`` row. For information:
``list()`` of all guests and 1,000 ``get()`` calls afterwards.

Run alone: ``.venv/bin/python bench/bench_define.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from pathlib import Path

import cpuver
from common import Result, status
from cpuver.store import GuestStore, NewGuest

GUESTS = 10_000
BATCH = 1_000
GOAL_S = 10.0
MACHINE = "pc-q35-10.0"
FEATURES_JSON = Path(cpuver.__file__).parent / "catalog" / "data" / "features.json"


def feature_names() -> list[str]:
    data = json.loads(FEATURES_JSON.read_text())
    return sorted(entry["name"] for entry in data["features"])


def pin_document(index: int, names: list[str], rng: random.Random) -> str:
    on = sorted(name for name in names if rng.random() < 0.45)
    off = sorted(set(names) - set(on))
    pin = {
        "schema": "cpuver-pin/1",
        "spec": "Haswell,version=best,+pcid,-hle",
        "model": "Haswell-v4",
        "machine": MACHINE,
        "qemu": "10.0",
        "accel": "kvm",
        "signature": {
            "vendor": "GenuineIntel",
            "family": 6,
            "model": 60,
            "stepping": 4,
            "model-id": "Intel Core Processor (Haswell, no TSX)",
            "xlevel": 2147483656,
            "level": 13,
        },
        "features": {"on": on, "off": off},
        "resolution": {
            "rule": "best",
            "chosen": "Haswell-v4",
            "rejected": [
                {"version": "Haswell-v3", "blockers": ["hle", "rtm"]},
                {"version": "Haswell-v2", "blockers": ["hle", "rtm", "spec-ctrl"]},
                {"version": "Haswell-v1", "blockers": ["hle", "rtm"]},
            ],
            "changes": ["+pcid", "-hle"],
            "catalog": {"release": "10.0", "build": "QEMU emulator version 10.0.2"},
            "reasons": [
                "version=best: highest version runnable under kvm on this host",
                "machine type pc-q35-10.0 applies no compat properties to Haswell-v4",
                "+pcid requested and offered by the host",
                "-hle requested; already absent from Haswell-v4",
            ],
        },
        "host": f"hv{index % 64:02}",
        "pinned_at": "2026-11-25T19:00:00+00:00",
    }
    return json.dumps(pin, sort_keys=True, separators=(",", ":"))


def guests(count: int) -> list[NewGuest]:
    names = feature_names()
    rng = random.Random(42)
    new = []
    for i in range(count):
        pin = pin_document(i, names, rng)
        fingerprint = hashlib.sha256(pin.encode()).hexdigest()
        new.append(NewGuest(f"guest-{i:05}", "defined", MACHINE, pin, fingerprint))
    return new


def run(count: int = GUESTS) -> list[Result]:
    new = guests(count)
    pin_bytes = sum(len(g.pin_json) for g in new) / len(new)
    with tempfile.TemporaryDirectory(prefix="cpuver-bench-") as tmp:
        db = Path(tmp) / "cpuver.db"
        start = time.perf_counter()
        store = GuestStore(f"sqlite:///{db}")
        store.migrate()
        migrated = time.perf_counter()
        for first in range(0, count, BATCH):
            store.define_many(new[first : first + BATCH], actor="bench", reason="benchmark")
        elapsed = time.perf_counter() - start
        defining = time.perf_counter() - migrated

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
            name=f"(e) define {count:,} guests into SQLite (GuestStore.define_many)",
            goal=f"<= {GOAL_S:.0f} s",
            figure=f"{elapsed:.2f} s ({defining / count * 1e6:.0f} µs per guest)",
            status=status(elapsed <= GOAL_S),
            details=[
                f"{count:,} guests with a {pin_bytes / 1000:.1f} KB pin each, "
                f"{count // BATCH} transactions of define_many({BATCH:,}) + first history rows",
                f"open + Alembic migration of the new file: {(migrated - start) * 1e3:.0f} ms; "
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
