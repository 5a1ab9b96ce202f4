"""Host facts: name, CPU identity and microcode, kernel release, CPU vulnerability status.

Everything is read below ``root`` (``/`` on a live host), so tests can fake ``/proc`` and ``/sys``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cpuver.errors import HostError
from cpuver.host.capabilities import HostFacts
from cpuver.host.cpuinfo import CpuInfo, read_cpuinfo

VULNERABILITIES = "sys/devices/system/cpu/vulnerabilities"


def host_name(root: Path = Path("/")) -> str:
    text = _read(root / "proc/sys/kernel/hostname")
    return text or os.uname().nodename


def kernel_release(root: Path = Path("/")) -> str | None:
    return _read(root / "proc/sys/kernel/osrelease")


def vulnerabilities(root: Path = Path("/")) -> dict[str, str]:
    """``/sys/devices/system/cpu/vulnerabilities/*``: name -> the kernel's one-line status."""
    folder = root / VULNERABILITIES
    if not folder.is_dir():
        return {}
    out: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        text = _read(entry)
        if text is not None:
            out[entry.name] = text
    return out


def read_facts(root: Path = Path("/"), cpu: CpuInfo | None = None) -> HostFacts:
    """The facts a snapshot records; ``cpu`` when ``/proc/cpuinfo`` was already read."""
    info = cpu or read_cpuinfo(root)
    return HostFacts(
        vendor=info.vendor,
        brand=info.brand,
        family=info.family,
        model=info.model,
        stepping=info.stepping,
        microcode=info.microcode,
        kernel=kernel_release(root),
        vulnerabilities=vulnerabilities(root),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise HostError(f"cannot read {path}: {err.strerror}") from err
