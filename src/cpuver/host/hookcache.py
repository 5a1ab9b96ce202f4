"""The libvirt hook's cached snapshot of this host (``cpuver-hook/1``) and what it depends on.

The snapshot holds what the host offers per accelerator (for the QEMU release of the emulator it
was probed for), the host's name and libvirt's spellings of feature names where they differ from
QEMU's. It is probed again when its key changes: the emulator binary (path, size, time, inode),
the kernel release, the CPU microcode, the KVM modules (reloaded: new sysfs entries) and the
cpuver version. A snapshot written with ``"key": null`` (``install-hook --host FILE``) is never
probed again. Standard library only, no pathlib: the hook reads this on every domain start. The
file is written with :mod:`marshal` (built into the interpreter) rather than JSON, whose module
imports ``re`` and with it a third of the hook's start-up time; :func:`load` reads it back.
"""

# posix and open() instead of pathlib or os on the hook's path: importing pathlib costs more
# start-up time than the hook has, and os (posixpath, stat, collections.abc) ~2 ms of it; the
# posix module is built into the interpreter. Writing the cache (rare) imports os.
# ruff: noqa: PTH103, PTH105, PTH120, PTH123

from __future__ import annotations

import marshal
import posix

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook ~3 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

SCHEMA = "cpuver-hook/1"
DEFAULT_CACHE = "/var/cache/cpuver/libvirt-hook-host"


def host_key(emulator: str) -> dict[str, Any]:
    """What the cached snapshot depends on (cheap to read: no process, a few small files)."""
    qemu = posix.stat(emulator)
    modules = {}
    for module in ("kvm", "kvm_intel", "kvm_amd"):
        try:
            found = posix.stat(f"/sys/module/{module}")
        except OSError:
            continue
        modules[module] = [found.st_ino, found.st_ctime_ns]
    from cpuver import __version__

    return {
        "cpuver": __version__,
        "qemu": [emulator, qemu.st_size, qemu.st_mtime_ns, qemu.st_ino],
        "kernel": posix.uname().release,
        "microcode": _microcode(),
        "kvm": modules,
    }


def _microcode() -> str | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/microcode/version") as sysfs:
            return sysfs.read().strip()
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("microcode"):
                    return line.partition(":")[2].strip()
                if not line.strip():
                    break  # the first CPU's block is enough
    except OSError:
        pass
    return None


def cached(
    cache: str, emulator: str, probe: Callable[[str, dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """The cached snapshot; ``probe(emulator, key)`` first when what it was taken from changed
    (or when there is none yet), and the cache rewritten."""
    try:
        data = load(cache)
    except FileNotFoundError:
        data = {}
    if data.get("schema") == SCHEMA and data.get("key") is None and "offers" in data:
        return data  # given with --host: never probed again
    key = host_key(emulator)
    if data.get("schema") == SCHEMA and data.get("key") == key:
        return data
    data = probe(emulator, key)
    write_snapshot(cache, data)
    return data


def write_snapshot(cache: str, data: dict[str, Any]) -> None:
    """Write the cache atomically (a hook running at the same time reads the old or the new)."""
    import os

    folder = os.path.dirname(cache) or "."
    os.makedirs(folder, exist_ok=True)
    temporary = f"{cache}.{os.getpid()}.tmp"
    with open(temporary, "wb") as file:
        marshal.dump(data, file)
    os.replace(temporary, cache)


def load(cache: str) -> dict[str, Any]:
    """The snapshot in ``cache``; ValueError when it is not one (OSError when unreadable)."""
    with open(cache, "rb") as file:
        try:
            data = marshal.load(file)
        except (EOFError, TypeError) as err:
            raise ValueError(f"{cache} is not a cpuver hook snapshot") from err
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{cache} is not a {SCHEMA} snapshot")
    return data
