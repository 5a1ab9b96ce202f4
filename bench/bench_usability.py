"""(a) Usability of every model on one host: cpuver from a snapshot vs asking QEMU 10.0 itself.

cpuver side: the bundled 10.0 catalog is loaded once, the TCG host snapshot is taken once (QEMU's
static expansion of ``max``, written as a cpuver host snapshot and read back, as a user's host
file would be); then each run times ``definitions_json(Resolver(catalog, ..., host=caps))``, which
computes ``unavailable-features`` for every name the catalog knows.

QEMU side: each run starts a fresh ``qemu-system-x86_64 -machine pc-q35-10.0 -accel tcg`` (through
cpuver's ``QmpSession``) and times from process start to the ``query-cpu-definitions`` answer (the
shutdown afterwards is not counted).

Both answers are compared as sets per name (QEMU repeats names once per XSAVE component); QEMU's
helper models ``base``, ``host`` and ``max`` are no catalog names and are left out.

Run alone: ``.venv/bin/python bench/bench_usability.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MACHINE, Result, median, ms, qemu_10_0, status, us
from cpuver import api
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.qemu import QemuInstall, QmpSession
from cpuver.resolve import Resolver

GOAL_RATIO = 100.0
QEMU_RUNS = 15
CPUVER_RUNS = 300
CPUVER_WARMUP = 20
NOT_CPU_MODELS = frozenset({"base", "host", "max"})


def tcg_snapshot(binary: Path) -> HostCapabilities:
    """Ask QEMU once what TCG offers; store it as a cpuver host snapshot and read that back."""
    probed = api.probe_with_qemu(binary, ["tcg"])
    with tempfile.TemporaryDirectory(prefix="cpuver-bench-") as tmp:
        path = Path(tmp) / "tcg-host.json"
        path.write_text(json.dumps(probed.to_json(), indent=1))
        return api.read_host(str(path))


def ask_qemu(install: QemuInstall) -> tuple[int, list[dict[str, Any]]]:
    """Nanoseconds from starting QEMU to its ``query-cpu-definitions`` answer, and the answer."""
    start = time.perf_counter_ns()
    with QmpSession(install, MACHINE, "tcg") as session:
        answer = session.command("query-cpu-definitions")
        elapsed = time.perf_counter_ns() - start
    return elapsed, list(answer)


def ask_cpuver(catalog: Any, caps: HostCapabilities) -> tuple[int, list[dict[str, Any]]]:
    start = time.perf_counter_ns()
    answer = api.definitions_json(Resolver(catalog, machine=MACHINE, accel="tcg", host=caps))
    return time.perf_counter_ns() - start, answer


def as_sets(answer: list[dict[str, Any]]) -> dict[str, frozenset[str]]:
    return {
        str(entry["name"]): frozenset(str(f) for f in entry.get("unavailable-features", []))
        for entry in answer
        if entry["name"] not in NOT_CPU_MODELS
    }


def compare(ours: dict[str, frozenset[str]], theirs: dict[str, frozenset[str]]) -> list[str]:
    problems = []
    for name in sorted(ours.keys() | theirs.keys()):
        if name not in theirs:
            problems.append(f"{name}: only cpuver lists it")
        elif name not in ours:
            problems.append(f"{name}: only QEMU lists it")
        elif ours[name] != theirs[name]:
            extra, missing = sorted(ours[name] - theirs[name]), sorted(theirs[name] - ours[name])
            problems.append(f"{name}: only cpuver blocks on {extra}, only QEMU on {missing}")
    return problems


def run(binary: Path | None = None, caps: HostCapabilities | None = None) -> list[Result]:
    binary = binary or qemu_10_0()
    install = QemuInstall(binary)
    build = install.version()

    load_start = time.perf_counter_ns()
    catalog = api.open_catalog("10.0")
    load_ns = time.perf_counter_ns() - load_start
    one_off = f"catalog load {ms(load_ns)}"
    if caps is None:
        probe_start = time.perf_counter_ns()
        caps = tcg_snapshot(binary)
        one_off += f", TCG snapshot from QEMU {ms(time.perf_counter_ns() - probe_start)}"

    first_ns, ours = ask_cpuver(catalog, caps)
    for _ in range(CPUVER_WARMUP - 1):
        ask_cpuver(catalog, caps)
    # Rounds of one QEMU run and a batch of cpuver runs, so both sides sample the same moments
    # (this machine has short spells where everything runs slower).
    cpuver_ns: list[int] = []
    qemu_ns: list[int] = []
    theirs: list[dict[str, Any]] = []
    for _ in range(QEMU_RUNS):
        elapsed, theirs = ask_qemu(install)
        qemu_ns.append(elapsed)
        cpuver_ns += [ask_cpuver(catalog, caps)[0] for _ in range(CPUVER_RUNS // QEMU_RUNS)]

    ours_sets, theirs_sets = as_sets(ours), as_sets(theirs)
    problems = compare(ours_sets, theirs_sets)
    usable = sum(1 for blockers in ours_sets.values() if not blockers)
    ratio = median(qemu_ns) / median(cpuver_ns)
    ok = ratio >= GOAL_RATIO and not problems
    figure = (
        f"{ratio:,.0f}x faster ({us(median(cpuver_ns))} vs {ms(median(qemu_ns))}), "
        f"{len(problems)} mismatches in {len(ours_sets)} names"
    )
    details = [
        f"QEMU build: {build}; machine {MACHINE}, accel tcg",
        f"names compared: {len(ours_sets)} cpuver / {len(theirs_sets)} QEMU; "
        f"usable under TCG: {usable}",
        f"cpuver: median {us(median(cpuver_ns))} over {len(cpuver_ns)} runs "
        f"(min {us(min(cpuver_ns))}, max {us(max(cpuver_ns))}; first call {us(first_ns)})",
        f"QEMU:   median {ms(median(qemu_ns))} over {QEMU_RUNS} fresh processes "
        f"(min {ms(min(qemu_ns))}, max {ms(max(qemu_ns))})",
        f"one-off costs, not in the ratio: {one_off}",
        f"ratio including a fresh catalog load: "
        f"{median(qemu_ns) / (median(cpuver_ns) + load_ns):,.0f}x",
        *[f"mismatch: {p}" for p in problems[:20]],
    ]
    numbers = {
        "ratio": ratio,
        "cpuver_median_us": median(cpuver_ns) / 1e3,
        "qemu_median_ms": median(qemu_ns) / 1e6,
        "catalog_load_ms": load_ns / 1e6,
        "mismatches": float(len(problems)),
        "names": float(len(ours_sets)),
    }
    return [
        Result(
            "(a) unavailable-features of every name, TCG, vs QEMU 10.0",
            f">= {GOAL_RATIO:.0f}x faster, 0 mismatches",
            figure,
            status(ok),
            details,
            numbers,
        )
    ]


if __name__ == "__main__":
    for result in run(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(result.line())
        for detail in result.details:
            print(f"       {detail}")
