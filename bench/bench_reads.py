"""Reads under load: a stored pool's best version over HTTP, and a page of a big guest store.

Goals (from issue 12):

* (h) ``GET /api/pools/rack/best?spec=Cascadelake-Server`` on a stored pool of 1,000 hosts
  answers >= 2,000 requests/s with p99 <= 20 ms at 16 connections (wrk on loopback);
* (i) a page of guests (``GET /api/guests?limit=100&after=...``) from a store of 100,000
  guests in <= 20 ms.

The store is a temporary SQLite file, filled before the server starts: 1,000 hosts (v1
snapshots offering what Cascadelake-Server-v5 needs under KVM, each lacking one of a few
features with some probability, seeded) in pool ``rack``, through ``HostStore.add_many``, and
100,000 guests sharing one real pin (Haswell-v4, QEMU 10.0) through ``GuestStore.define_many``.
The server is ``cpuver serve --workers 2 --no-access-log``, checked to answer, warmed up for a
few seconds (its first answer builds and keeps the pool's matrix; every later one reads the
pool's change counter and answers from memory). (h): ``wrk -t1 -c16 --latency`` for
``--duration`` seconds. (i): 200 sequential requests over one keep-alive connection, each for
the page after a random guest name; median and p99 of their wall times.

Run alone: ``.venv/bin/python bench/bench_reads.py [--duration 10]``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_service import WARMUP_S, Load, parse_wrk, start_server, stop_server
from common import RESULTS, Result, median, quantile, status
from cpuver import api
from cpuver.resolve import Resolver
from cpuver.store import GuestStore, HostStore, NewGuest

HOSTS = 1_000
GUESTS = 100_000
GOAL_RPS = 2_000
GOAL_P99_MS = 20.0
GOAL_PAGE_MS = 20.0
PAGE = 100
PAGE_REQUESTS = 200
SPEC = "Skylake-Server"
SHAKY = {"hle": 0.3, "rtm": 0.3, "avx512vnni": 0.01}


def fill(db: str) -> None:
    """1,000 hosts in pool ``rack`` and 100,000 guests, as described above."""
    catalog = api.open_catalog("10.0")
    needs = sorted(
        Resolver(catalog, accel="kvm").resolve("Cascadelake-Server-v5").definition.features
    )
    chance = random.Random(12)
    snapshots = []
    for n in range(HOSTS):
        lost = {f for f, p in SHAKY.items() if chance.random() < p}
        offers = [f for f in needs if f not in lost]
        data = {"schema": "cpuver-host/1", "host": f"hv{n:04d}",
                "accelerators": {"kvm": {"features": offers}}}  # fmt: skip
        snapshots.append((json.dumps(data, sort_keys=True), f"hv{n:04d}"))
    with HostStore(db) as hosts:
        hosts.add_many(snapshots, ["rack"])
    from cpuver.domain.pinning import pin

    pinned = pin(Resolver(catalog, accel="kvm").resolve("Haswell-v4"), catalog)
    pin_json = json.dumps(pinned.to_json(), sort_keys=True)
    with GuestStore(db) as guests:
        for start in range(0, GUESTS, 5_000):
            guests.define_many(
                (NewGuest(f"vm{n:06d}", "shutoff", pinned.machine, pin_json, pinned.fingerprint)
                 for n in range(start, start + 5_000)),
                reason="bench",
            )  # fmt: skip


def wrk_get(url: str, connections: int, duration_s: int) -> Load:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency",
               "--timeout", "5s", url]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stderr}{out.stdout}")
    return parse_wrk(out.stdout)


def page_times(base: str) -> list[float]:
    """Wall times (ms) of PAGE_REQUESTS page requests after random names, one connection."""
    import http.client

    chance = random.Random(7)
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    times = []
    for _ in range(PAGE_REQUESTS):
        after = f"vm{chance.randrange(GUESTS - PAGE):06d}"
        started = time.perf_counter()
        connection.request("GET", f"/api/guests?limit={PAGE}&after={after}")
        response = connection.getresponse()
        page = json.loads(response.read())
        times.append((time.perf_counter() - started) * 1e3)
        if response.status != 200 or len(page) != PAGE:
            raise SystemExit(f"unexpected page: {response.status}, {len(page)} guests")
    connection.close()
    return times


def run(duration_s: int = 5) -> list[Result]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (./dev setup installs it)")
    with tempfile.TemporaryDirectory(prefix="cpuver-reads-") as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        fill(f"sqlite:///{workdir / 'cpuver.db'}")
        filled_s = time.monotonic() - started
        server, base = start_server(2, False, workdir)
        try:
            best = f"{base}/api/pools/rack/best?spec={SPEC}&qemu=10.0"
            with urllib.request.urlopen(best, timeout=60) as response:
                answer = json.loads(response.read())
            if len(answer["hosts"]) != HOSTS:
                raise SystemExit(f"unexpected answer: {len(answer['hosts'])} hosts")
            wrk_get(best, 16, WARMUP_S)
            load = wrk_get(best, 16, duration_s)
            times = page_times(base)
        finally:
            stop_server(server)
    ok = load.requests_per_s >= GOAL_RPS and load.p99_ms <= GOAL_P99_MS and not load.errors
    pool = Result(
        name=f"(h) service pool best, stored pool of {HOSTS:,} hosts, 2 workers, 16 connections",
        goal=f">= {GOAL_RPS:,} req/s, p99 <= {GOAL_P99_MS:.0f} ms",
        figure=(f"{load.requests_per_s:,.0f} req/s, p50 {load.p50_ms:.1f} ms, "
                f"p99 {load.p99_ms:.1f} ms" + (f", {load.errors} errors" if load.errors else "")),
        status=status(ok),
        details=[f"answer: {SPEC} -> {answer['best']}; store filled in {filled_s:.1f} s"],
        numbers={"requests_per_s": load.requests_per_s, "p99_ms": load.p99_ms},
    )  # fmt: skip
    page_ms = median(times)
    guests = Result(
        name=f"(i) a page of {PAGE} guests over HTTP from a store of {GUESTS:,}",
        goal=f"<= {GOAL_PAGE_MS:.0f} ms",
        figure=f"median {page_ms:.1f} ms, p99 {quantile(times, 0.99):.1f} ms",
        status=status(page_ms <= GOAL_PAGE_MS),
        numbers={"median_ms": page_ms, "p99_ms": quantile(times, 0.99)},
    )
    return [pool, guests]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load (10)")
    args = parser.parse_args()
    results = run(args.duration)
    for item in results:
        print(item.line())
        for detail in item.details:
            print(f"       {detail}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reads.json").write_text(
        json.dumps([{"name": r.name, "figure": r.figure, "status": r.status} for r in results])
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
