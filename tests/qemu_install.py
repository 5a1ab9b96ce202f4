"""Where the test set-up (``./dev setup``) puts real QEMU builds, and how tests get at them.

``./dev test`` exports ``CPUVER_QEMU_7_2`` and ``CPUVER_QEMU_10_0``; without them the defaults are
the places ``./dev setup`` installs to. Only the binary path matters: the QEMU adapter
(``cpuver.host.qemu``) finds an unpacked build's modules and firmware from it.

Tests normally use the fixtures of ``tests/conftest.py`` (``qemu72``, ``qemu100``,
``qemu_release``); import from here for the type (``from qemu_install import QemuInstall``).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cpuver.host.kvm import kvm_usable

RELEASES: tuple[str, ...] = ("7.2", "10.0")

ENV_VARS: dict[str, str] = {"7.2": "CPUVER_QEMU_7_2", "10.0": "CPUVER_QEMU_10_0"}

_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class QemuInstall:
    """One real QEMU build: its ``qemu-system-x86_64`` and the release (``"7.2"``) it is."""

    binary: Path
    release: str


def qemu_home() -> Path:
    """Folder of the unpacked QEMU builds (``./dev setup``: ``$CPUVER_QEMU_HOME``)."""
    env = os.environ.get("CPUVER_QEMU_HOME")
    return Path(env) if env else Path.home() / ".cache" / "cpuver" / "qemu"


def default_binary(release: str) -> Path:
    """Where ``./dev setup`` installs ``release``."""
    if release == "7.2":
        return qemu_home() / "7.2" / "usr" / "bin" / "qemu-system-x86_64"
    if release == "10.0":
        return Path("/usr/bin/qemu-system-x86_64")
    raise ValueError(f"no QEMU {release!r} in the test set-up; known: {', '.join(RELEASES)}")


def configured_binary(release: str) -> Path:
    """``$CPUVER_QEMU_<release>`` if set, else :func:`default_binary`."""
    if release not in ENV_VARS:
        raise ValueError(f"no QEMU {release!r} in the test set-up; known: {', '.join(RELEASES)}")
    env = os.environ.get(ENV_VARS[release])
    return Path(env) if env else default_binary(release)


@cache
def reported_release(binary: Path) -> str | None:
    """``"X.Y"`` from ``binary -version``; None when it does not run or says something else."""
    try:
        proc = subprocess.run(
            [str(binary), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(proc.stdout)
    return f"{match[1]}.{match[2]}" if proc.returncode == 0 and match else None


def find(release: str) -> QemuInstall | str:
    """The install of ``release``, or why it is not usable (a message for skip/fail)."""
    binary = configured_binary(release)
    hint = f"set {ENV_VARS[release]} or run ./dev setup"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return f"QEMU {release} not found at {binary} ({hint})"
    got = reported_release(binary)
    if got is None:
        return f"{binary} -version does not report a QEMU version ({hint})"
    if got != release:
        return f"{binary} is QEMU {got}, not {release} ({hint})"
    return QemuInstall(binary=binary, release=release)


def kvm_available() -> bool:
    """Whether KVM answers on ``/dev/kvm`` for this process (cpuver's own check, see there)."""
    return kvm_usable()
