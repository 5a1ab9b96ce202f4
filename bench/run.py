"""Run every cpuver benchmark and compare each figure with its goal.

    .venv/bin/python bench/run.py [--details] [--markdown] [--strict] [--qemu PATH]

Prints each benchmark's figure with PASS/MISS (INFO: no goal), the details behind it, and a
summary; writes the numbers to ``bench/results/latest.json`` (git-ignored). ``--markdown``
also prints the summary as the table kept in README.md; ``--strict`` exits 1 on any MISS.
Takes well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import bench_cold_start
import bench_define
import bench_fleet
import bench_libvirt
import bench_probe
import bench_reads
import bench_resolve
import bench_service
import bench_usability
from common import RESULTS, Result, qemu_10_0
from cpuver.host.qemu import QemuInstall


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from ``/proc/stat``."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def others_share(start: tuple[int, int], own_start: float) -> float | None:
    """Share of all CPUs other processes used since ``start`` (0 = quiet machine)."""
    busy, total = cpu_ticks()
    if total == start[1]:
        return None
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system - own_start
    others = (busy - start[0]) - own * os.sysconf("SC_CLK_TCK")
    return max(0.0, others / (total - start[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="import and profile details always")
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--qemu", type=Path, default=qemu_10_0(), help="QEMU 10.0 binary")
    parser.add_argument(
        "--service-seconds", type=int, default=5, help="wrk run per service load cell (5)"
    )
    args = parser.parse_args()

    started = time.monotonic()
    ticks = cpu_ticks()
    times = os.times()
    own_start = times.user + times.system + times.children_user + times.children_system
    build = QemuInstall(args.qemu).version()
    print(f"cpuver benchmarks: {build}; {os.cpu_count()} CPUs; Python {platform.python_version()}")
    print()
    caps = bench_usability.tcg_snapshot(args.qemu)
    results: list[Result] = []
    steps: list[Callable[[], list[Result]]] = [
        lambda: bench_usability.run(args.qemu, caps),
        lambda: bench_resolve.run(caps),
        lambda: bench_cold_start.run(details=args.details),
        lambda: bench_probe.run(args.qemu),
        bench_define.run,
        bench_fleet.run,
        lambda: bench_service.run([2], [4, 16, 64], args.service_seconds),
        lambda: bench_reads.run(args.service_seconds),
        bench_libvirt.run,
    ]
    for step in steps:
        for result in step():
            results.append(result)
            print(result.line())
            for detail in result.details:
                print(f"       {detail}")
            print()

    print("summary:")
    for result in results:
        print(f"  {result.status:4}  {result.name}: {result.figure}")
    others = others_share(ticks, own_start)
    busy = f"{others:.0%} of all CPUs" if others is not None else "unknown"
    print(f"  ({time.monotonic() - started:.0f} s; other processes used {busy} meanwhile", end="")
    print(": figures are noisy)" if others is not None and others > 0.1 else ")")

    if args.markdown:
        print()
        print("| benchmark | goal | figure | status |")
        print("|---|---|---|---|")
        for result in results:
            print(f"| {result.name} | {result.goal} | {result.figure} | {result.status} |")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "qemu": build,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "others_cpu_share": others,
                "results": [
                    {k: getattr(r, k) for k in ("name", "goal", "figure", "status", "numbers")}
                    for r in results
                ],
            },
            indent=1,
        )
        + "\n"
    )
    missed = [r for r in results if r.status == "MISS"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
