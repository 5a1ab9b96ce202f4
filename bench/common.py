"""Shared bits of the benchmark scripts: paths, timing helpers and the result record."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
CPUVER = VENV_BIN / "cpuver"
RESULTS = ROOT / "bench" / "results"

MACHINE = "pc-q35-10.0"
"""The machine type both sides of the usability benchmark use (the 10.0 catalog's default)."""


def qemu_10_0() -> Path:
    """QEMU 10.0: ``$CPUVER_QEMU_10_0`` (set by ``./dev``), else ``/usr/bin/qemu-system-x86_64``."""
    return Path(os.environ.get("CPUVER_QEMU_10_0", "/usr/bin/qemu-system-x86_64"))


@dataclass
class Result:
    """One benchmark figure against its goal (``status`` is PASS, MISS or INFO)."""

    name: str
    goal: str
    figure: str
    status: str
    details: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return f"[{self.status:4}] {self.name}: {self.figure} (goal {self.goal})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def us(ns: float) -> str:
    return f"{ns / 1e3:.1f} µs"


def status(ok: bool) -> str:
    return "PASS" if ok else "MISS"
