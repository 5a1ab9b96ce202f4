"""Where the test set-up (``./dev setup``) puts real QEMU builds, and how tests get at them.

``./dev test`` exports ``CPUVER_QEMU_5_2``, ``CPUVER_QEMU_7_2``, ``CPUVER_QEMU_10_0`` and
``CPUVER_QEMU_11_1``; without them the defaults are the places ``./dev setup`` unpacks them to
(``~/.cache/cpuver/qemu/<release>``: 7.2 from this machine's bookworm; 5.2, 10.0 and 11.1 each in a
root of its own with its suite's libraries). Only the binary path matters: the QEMU adapter
(``cpuver.host.qemu``) finds an unpacked build's loader, libraries, modules and firmware from it.

Tests normally use the fixtures of ``tests/conftest.py`` (``qemu52``, ``qemu72``, ``qemu100``,
``qemu111``, ``qemu_release``); import from here for the type (``from qemu_install import
QemuInstall``).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cpuver.host.kvm import kvm_usable
from cpuver.host.qemu import QemuInstall as Adapter

RELEASES: tuple[str, ...] = ("5.2", "7.2", "10.0", "11.1")
"""Every release a catalog is imported from (Debian's bullseye, bookworm, trixie and
trixie-backports QEMU)."""

ENV_VARS: dict[str, str] = {
    release: f"CPUVER_QEMU_{release.replace('.', '_')}" for release in RELEASES
}

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
    """Where ``./dev setup`` unpacks ``release``."""
    if release not in RELEASES:
        raise ValueError(f"no QEMU {release!r} in the test set-up; known: {', '.join(RELEASES)}")
    return qemu_home() / release / "usr" / "bin" / "qemu-system-x86_64"


def configured_binary(release: str) -> Path:
    """``$CPUVER_QEMU_<release>`` if set, else :func:`default_binary`."""
    if release not in ENV_VARS:
        raise ValueError(f"no QEMU {release!r} in the test set-up; known: {', '.join(RELEASES)}")
    env = os.environ.get(ENV_VARS[release])
    return Path(env) if env else default_binary(release)


@cache
def reported_release(binary: Path) -> str | None:
    """``"X.Y"`` from ``binary -version``; None when it does not run or says something else."""
    adapter = Adapter(binary)
    try:
        proc = subprocess.run(
            [*adapter.command(), "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=adapter.environment(),
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
