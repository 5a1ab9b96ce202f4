"""(l) Replaying every recorded real host of every release: libvirt's recordings of QEMU 4.1 …
10.0 on real Intel and AMD machines (tests/data/libvirt), each read as a host file (QMP replies
and, where libvirt wrote one, its capabilities cache), every name of that release's catalog
resolved under KVM and TCG and compared with what QEMU answered there (tests/replays.py).

Timed: the whole replay, files read and decompressed, catalogs loaded (cold, then warm, in the
same process); the figure also gives the agreement (names whose alias-of and blockers equal
QEMU's). For information: no goal was set.

Run alone: ``.venv/bin/python bench/bench_replay.py``.
"""

from __future__ import annotations

import sys
import time

from common import ROOT, Result

sys.path.insert(0, str(ROOT / "tests"))

from replays import cases, replay


def run() -> list[Result]:
    every = list(cases())
    timings = []
    compared = equal = 0
    for attempt in range(3):
        started = time.perf_counter()
        results = [replay(entry, form) for entry, form in every]
        timings.append(time.perf_counter() - started)
        if attempt == 0:
            compared = sum(r.compared for r in results)
            equal = sum(r.equal for r in results)
    recordings = len({entry["replies"] for entry, _form in every})
    releases = len({entry["release"] for entry, _form in every})
    figure = (
        f"{len(every)} files ({recordings} recordings, {releases} releases, KVM and TCG) in "
        f"{timings[0]:.2f} s cold, {min(timings[1:]):.2f} s warm; {equal:,} of {compared:,} names "
        f"({100 * equal / compared:.2f}%) as QEMU answered"
    )
    details = [f"runs: {', '.join(f'{t:.2f} s' for t in timings)}"]
    return [Result("(l) replay every recorded host of every release", "—", figure, "INFO", details,
                   {"cold_s": timings[0], "warm_s": min(timings[1:]), "equal": equal,
                    "compared": compared})]  # fmt: skip


if __name__ == "__main__":
    for result in run():
        print(result.line())
        for detail in result.details:
            print(f"  {detail}")
