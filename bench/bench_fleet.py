"""(f) Pools of hosts (``cpuver.fleet``): usability matrix, best-for-pool, one host changed.

Synthetic hosts, seeded: each host starts from a realistic feature set, what KVM offers for
one of a few server CPU generations (a version's features under KVM, from Haswell to
SapphireRapids and EPYC), and loses each feature with probability 1%, and TSX (hle, rtm) with
probability 30% (microcode updates), so pools are mixed and blocked lists are long.

* usability matrix: 100,000 hosts x every versioned name of the bundled 10.0 catalog, computed
  from the hosts' encoded offers (``Fleet.usability``: the numpy bit work) <= 1 s. For
  information, also loading the same 100,000 hosts into a ``Fleet`` (``set_hosts``: encoding
  Python sets into bit rows, plus the matrix).
* best-for-pool: ``fleet.best("Cascadelake-Server", pool)`` over a pool of 10,000 of those
  hosts, including the blocked lists (which host lacks what for each newer version, as arrays
  that become Python tuples when read) <= 10 ms median. For information: reading every
  blocked pair as tuples too, the same with ``explain=False`` (no blocked lists),
  ``baseline(pool)`` (every model), and a rack-like pool of 10,000 hosts of one generation
  where only a few hosts hold newer versions back.
* one host's snapshot changed: ``fleet.set_host(name, new offers)`` on the 100,000-host fleet,
  then the fleet-wide answers (``baseline()``, every model) <= 1 ms median.

Run alone: ``.venv/bin/python bench/bench_fleet.py``.
"""

from __future__ import annotations

import random
import time

from common import Result, median, ms, quantile, status, us
from cpuver import api
from cpuver.catalog import Catalog
from cpuver.features import FeatureSet
from cpuver.fleet import Fleet
from cpuver.resolve import Resolver

SEED = 20261125
FLEET_HOSTS = 100_000
POOL_HOSTS = 10_000
GOAL_MATRIX_NS = 1_000_000_000
GOAL_BEST_NS = 10_000_000
GOAL_CHANGE_NS = 1_000_000
GENERATIONS = (
    "Haswell-v4",
    "Broadwell-v4",
    "Skylake-Server-v5",
    "Cascadelake-Server-v5",
    "Icelake-Server-v7",
    "SapphireRapids-v3",
    "EPYC-Rome-v4",
    "EPYC-Milan-v2",
    "EPYC-Genoa-v1",
)
TSX = frozenset({"hle", "rtm"})


def generations(catalog: Catalog) -> list[FeatureSet]:
    resolver = Resolver(catalog, accel="kvm")
    defaults = catalog.accelerator("kvm").defaults.on
    out = []
    for name in GENERATIONS:
        features = resolver.resolve(name).definition.features | defaults
        out.append(features | TSX if not name.startswith("EPYC") else features)
    return out


def synthetic_hosts(catalog: Catalog, count: int, seed: int = SEED) -> dict[str, FeatureSet]:
    rng = random.Random(seed)
    bases = [sorted(g) for g in generations(catalog)]
    hosts = {}
    for i in range(count):
        base = rng.choice(bases)
        kept = [f for f in base if rng.random() >= 0.01]
        offers = frozenset(kept)
        if rng.random() < 0.3:
            offers -= TSX
        hosts[f"host{i:06d}"] = offers
    return hosts


def rack_fleet(catalog: Catalog, seed: int = SEED) -> Fleet:
    """10,000 hosts of one generation: 1% with TSX off, 0.5% without xsaves (needed by v5)."""
    rng = random.Random(seed)
    resolver = Resolver(catalog, accel="kvm")
    base = (
        resolver.resolve("Cascadelake-Server-v5").definition.features
        | resolver.resolve("Cascadelake-Server-v1").definition.features
        | catalog.accelerator("kvm").defaults.on
    )
    hosts = {}
    for i in range(POOL_HOSTS):
        offers = base
        draw = rng.random()
        if draw < 0.01:
            offers = base - TSX
        elif draw < 0.015:
            offers = base - {"xsaves"}
        hosts[f"rack3-{i:05d}"] = offers
    fleet = Fleet(catalog, "kvm")
    fleet.set_hosts(hosts)
    return fleet


def timed(call: object, runs: int) -> list[int]:
    assert callable(call)
    out = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - start)
    return out


def run() -> list[Result]:
    catalog = api.open_catalog("10.0")
    made = time.perf_counter_ns()
    hosts = synthetic_hosts(catalog, FLEET_HOSTS)
    made_ns = time.perf_counter_ns() - made
    fleet = Fleet(catalog, "kvm")
    versions = len(fleet.versions)

    load = time.perf_counter_ns()
    fleet.set_hosts(hosts)
    load_ns = time.perf_counter_ns() - load
    bits = fleet.bits()
    matrix_ns = timed(lambda: fleet.usability(bits), 5)
    same = bool((fleet.usability(bits) == fleet.matrix()).all())
    results = [
        Result(
            f"(f) usability matrix, {FLEET_HOSTS:,} hosts x {versions} versions",
            "<= 1 s",
            f"{ms(median(matrix_ns))} median of {len(matrix_ns)}",
            status(median(matrix_ns) <= GOAL_MATRIX_NS and same),
            [
                f"loading the {FLEET_HOSTS:,} hosts into a Fleet (set_hosts: Python sets -> bit "
                f"rows, then the matrix) {ms(load_ns)}; making them {ms(made_ns)}",
                f"{int(fleet.matrix().sum()):,} usable (host, version) pairs; "
                f"matrix equals the one kept by the fleet: {same}",
            ],
            {"matrix_ns": median(matrix_ns), "load_ns": load_ns},
        )
    ]

    pool = list(fleet.hosts[:POOL_HOSTS])
    fleet.best("Cascadelake-Server", pool)
    best_ns = timed(lambda: fleet.best("Cascadelake-Server", pool), 30)
    answer = fleet.best("Cascadelake-Server", pool)
    bare_ns = timed(lambda: fleet.best("Cascadelake-Server", pool, explain=False), 30)
    spelled_ns = timed(lambda: list(fleet.best("Cascadelake-Server", pool).blocked), 10)
    baseline_ns = timed(lambda: fleet.baseline(pool), 30)
    holders = sum(len(h) for _v, h in answer.blocked)
    rack = rack_fleet(catalog)
    rack_pool = list(rack.hosts)
    rack.best("Cascadelake-Server", rack_pool)
    rack_ns = timed(lambda: rack.best("Cascadelake-Server", rack_pool), 30)
    rack_answer = rack.best("Cascadelake-Server", rack_pool)
    rack_holders = sum(len(h) for _v, h in rack_answer.blocked)
    results.append(
        Result(
            f"(f) best-for-pool, Cascadelake-Server over {POOL_HOSTS:,} hosts",
            "<= 10 ms median",
            f"{ms(median(best_ns))} median (p90 {ms(quantile(best_ns, 0.9))})",
            status(median(best_ns) <= GOAL_BEST_NS),
            [
                f"best {answer.best}; {len(answer.blocked)} newer versions blocked by "
                f"{holders:,} (host, version) pairs in all (random hosts: most lack something)",
                "blocked lists are numpy arrays grouped by what each host lacks; reading every "
                f"pair as Python tuples (host, missing features) too: {ms(median(spelled_ns))} "
                "median",
                f"the same without blocked lists (explain=False): {ms(median(bare_ns))} median; "
                f"baseline(pool) (all {len(fleet.models())} models): "
                f"{ms(median(baseline_ns))} median",
                f"rack-like pool of {POOL_HOSTS:,} Cascadelake hosts (1% TSX off, 0.5% without "
                f"xsaves): {ms(median(rack_ns))} median, best {rack_answer.best}, "
                f"{rack_holders:,} (host, version) pairs blocked",
            ],
            {
                "best_ns": median(best_ns),
                "best_unexplained_ns": median(bare_ns),
                "best_spelled_ns": median(spelled_ns),
                "baseline_ns": median(baseline_ns),
                "rack_best_ns": median(rack_ns),
            },
        )
    )

    rng = random.Random(SEED + 1)
    names = list(fleet.hosts)
    changes = [
        (rng.choice(names), base - TSX if rng.random() < 0.5 else base)
        for base in generations(catalog)
        for _ in range(50)
    ]

    def change_one() -> None:
        name, offers = changes[rng.randrange(len(changes))]
        fleet.set_host(name, offers)
        fleet.baseline()

    for _ in range(100):
        change_one()
    change_ns = timed(change_one, 2000)
    set_only = timed(lambda: fleet.set_host(*changes[0]), 2000)
    results.append(
        Result(
            f"(f) one host's snapshot changed in a {FLEET_HOSTS:,}-host fleet, answers updated",
            "<= 1 ms median",
            f"{us(median(change_ns))} median (p99 {us(quantile(change_ns, 0.99))})",
            status(median(change_ns) <= GOAL_CHANGE_NS),
            [
                "set_host + baseline() of every model for the whole fleet; set_host alone "
                f"{us(median(set_only))} median"
            ],
            {"change_ns": median(change_ns), "set_host_ns": median(set_only)},
        )
    )
    return results


if __name__ == "__main__":
    for result in run():
        print(result.line())
        for detail in result.details:
            print(f"       {detail}")
