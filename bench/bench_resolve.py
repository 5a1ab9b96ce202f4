"""(b) One in-process ``Resolver.resolve`` call: median per call.

The catalog (bundled 10.0) and the ``Resolver`` are built once; every call is then timed on its
own with ``time.perf_counter_ns`` after a warm-up (the cases take turns in 10 rounds), and the
median, p90 and p99 are reported.

* ``Haswell,version=v3,+pcid,-hle`` with no host (the default ``Resolver``: newest pc-q35,
  KVM): the goal, <= 20 µs median.
* ``version=best`` with a host, for information: ``Westmere,version=best`` on this machine's TCG
  snapshot (v2 rejected: spec-ctrl; v1 chosen), and ``Haswell,version=best`` on a Haswell host
  with TSX off (every version's features under KVM of ``Haswell-v4``: v4 chosen, v3/v1 rejected,
  all four versions tested). Under TCG no Haswell version runs, hence the synthetic host.

Run alone: ``.venv/bin/python bench/bench_resolve.py`` (asks QEMU once for the TCG snapshot).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from common import Result, median, qemu_10_0, quantile, status, us
from cpuver import api
from cpuver.catalog import Catalog
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolver

GOAL_NS = 20_000
PLAIN = "Haswell,version=v3,+pcid,-hle"
WARMUP = 500


ROUNDS = 10


def timed_calls(call: Callable[[], object], iterations: int) -> list[int]:
    """Nanoseconds of each of ``iterations`` calls."""
    timings = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        start = clock()
        call()
        timings.append(clock() - start)
    return timings


def haswell_host(catalog: Catalog) -> HostCapabilities:
    """A Haswell host with TSX disabled: offers exactly Haswell-v4's features under KVM."""
    resolver = Resolver(catalog, accel="kvm")
    offers = resolver.resolve("Haswell-v4").definition.features
    return HostCapabilities("haswell-notsx (synthetic)", {"kvm": frozenset(offers)}, "GenuineIntel")


def figure(timings: list[int]) -> str:
    return (
        f"median {us(median(timings))} (p90 {us(quantile(timings, 0.9))}, "
        f"p99 {us(quantile(timings, 0.99))}, n={len(timings)})"
    )


def run(tcg: HostCapabilities | None = None, scale: float = 1.0) -> list[Result]:
    catalog = api.open_catalog("10.0")
    tcg = tcg or api.probe_with_qemu(qemu_10_0(), ["tcg"])
    plain = Resolver(catalog)
    on_tcg = Resolver(catalog, accel="tcg", host=tcg)
    on_haswell = Resolver(catalog, accel="kvm", host=haswell_host(catalog))

    cases: list[tuple[str, Resolver, str, int]] = [
        ("plain", plain, PLAIN, 20_000),
        ("bare", plain, "Haswell", 5_000),
        ("best-tcg", on_tcg, "Westmere,version=best", 5_000),
        ("best-haswell", on_haswell, "Haswell,version=best", 5_000),
    ]
    timings: dict[str, list[int]] = {key: [] for key, *_ in cases}
    answers: dict[str, str] = {}
    for key, resolver, spec, _n in cases:
        answer = resolver.resolve(spec)
        answers[key] = f"{spec} -> {answer.name} ({answer.rule.value})" + "".join(
            f"; rejected {name}: {' '.join(missing)}" for name, missing in answer.blockers
        )
        timed_calls(partial(resolver.resolve, spec), WARMUP)
    # The cases take turns in rounds, so a slow spell of the machine hits them all alike.
    for _ in range(ROUNDS):
        for key, resolver, spec, iterations in cases:
            count = int(iterations * scale) // ROUNDS
            timings[key] += timed_calls(partial(resolver.resolve, spec), count)

    plain_median = median(timings["plain"])
    return [
        Result(
            f"(b) Resolver.resolve({PLAIN!r}), in process",
            "<= 20 µs median",
            figure(timings["plain"]),
            status(plain_median <= GOAL_NS),
            [
                answers["plain"] + f"; machine {plain.machine.name}, accel {plain.accel}",
                f"bare name: {answers['bare']}: {figure(timings['bare'])}",
            ],
            {"median_us": plain_median / 1e3, "p99_us": quantile(timings["plain"], 0.99) / 1e3},
        ),
        Result(
            "(b) Resolver.resolve('Westmere,version=best'), TCG snapshot of this host",
            "none (information)",
            figure(timings["best-tcg"]),
            "INFO",
            [answers["best-tcg"]],
            {"median_us": median(timings["best-tcg"]) / 1e3},
        ),
        Result(
            "(b) Resolver.resolve('Haswell,version=best'), Haswell host with TSX off",
            "none (information)",
            figure(timings["best-haswell"]),
            "INFO",
            [answers["best-haswell"]],
            {"median_us": median(timings["best-haswell"]) / 1e3},
        ),
    ]


if __name__ == "__main__":
    for result in run():
        print(result.line())
        for detail in result.details:
            print(f"       {detail}")
