"""(d) What KVM offers a guest: the ioctl probe of ``/dev/kvm`` vs asking QEMU, side by side.

* ioctl probe: :func:`cpuver.host.kvm.read_kvm` (system ioctls on ``/dev/kvm``, no VM) plus
  :func:`cpuver.host.kvm.kvm_offers` for the bundled 10.0 catalog's features. Goal: <= 20 ms
  median per probe, read + decode.
* QEMU probe: :func:`cpuver.host.qemu.offered_features` with QEMU 10.0 under KVM (two paused
  QEMU processes: the ``host`` expansion and a vCPU asking for every feature). For information.

Both answers are compared (they must be equal). The catalog is loaded once, untimed. The cases
take turns in rounds so a slow spell of the machine hits both alike.

Run alone: ``.venv/bin/python bench/bench_probe.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import Result, median, ms, qemu_10_0, quantile, status
from cpuver import api
from cpuver.host.kvm import kvm_offers, read_kvm
from cpuver.host.qemu import QemuInstall, offered_features

GOAL_NS = 20_000_000
ROUNDS = 5
IOCTL_PER_ROUND = 40
QEMU_PER_ROUND = 2


def run(qemu: Path | None = None) -> list[Result]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return [
            Result("(d) ioctl probe of /dev/kvm", "<= 20 ms median", "skipped: no /dev/kvm", "INFO")
        ]
    catalog = api.open_catalog("10.0")
    known, release = catalog.known_features, (10, 0)
    install = QemuInstall(qemu or qemu_10_0())

    def ioctl_probe() -> frozenset[str]:
        return kvm_offers(read_kvm(), known, release)

    def qemu_probe() -> frozenset[str]:
        return offered_features(install, "kvm")[0]

    ours, theirs = ioctl_probe(), qemu_probe()  # warm-up, and the answers compared
    ioctl_ns: list[int] = []
    read_ns: list[int] = []
    qemu_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(ROUNDS):
        for _ in range(IOCTL_PER_ROUND):
            start = clock()
            dump = read_kvm()
            middle = clock()
            kvm_offers(dump, known, release)
            ioctl_ns.append(clock() - start)
            read_ns.append(middle - start)
        for _ in range(QEMU_PER_ROUND):
            start = clock()
            qemu_probe()
            qemu_ns.append(clock() - start)
    ioctl_median, qemu_median = median(ioctl_ns), median(qemu_ns)
    same = (
        "same answer"
        if ours == theirs
        else (f"DIFFERENT: only ioctl {sorted(ours - theirs)}, only QEMU {sorted(theirs - ours)}")
    )
    return [
        Result(
            "(d) ioctl probe of /dev/kvm (read_kvm + kvm_offers, QEMU 10.0 rules)",
            "<= 20 ms median",
            f"median {ms(ioctl_median)} (p90 {ms(quantile(ioctl_ns, 0.9))}, n={len(ioctl_ns)}); "
            f"QEMU probe median {ms(qemu_median)} (n={len(qemu_ns)}): "
            f"{qemu_median / ioctl_median:.0f}x faster",
            status(ioctl_median <= GOAL_NS and ours == theirs),
            [
                f"ioctls alone (read_kvm): median {ms(median(read_ns))}; "
                f"decoding: median {ms(ioctl_median - median(read_ns))}",
                f"QEMU probe: offered_features({install.binary}, 'kvm'): two QEMU processes",
                f"{len(ours)} features offered; {same}",
            ],
            {
                "ioctl_median_ms": ioctl_median / 1e6,
                "read_median_ms": median(read_ns) / 1e6,
                "qemu_median_ms": qemu_median / 1e6,
            },
        )
    ]


if __name__ == "__main__":
    for result in run():
        print(result.line())
        for detail in result.details:
            print(f"       {detail}")
