"""The ``-cpu`` argument that makes QEMU build exactly a resolved definition."""

from __future__ import annotations

from cpuver.models import Delta
from cpuver.resolve import Resolution


def cpu_arg(resolution: Resolution) -> str:
    """``Haswell-v4,pcid=on,hle=off,enforce``: the version, then what differs from it."""
    return ",".join(
        [
            resolution.version.name,
            *_props(resolution.changes),
            *(["enforce"] if resolution.enforce else []),
        ]
    )


def _props(changes: Delta) -> list[str]:
    props = [f"{name}={_escape(value)}" for name, value in changes.signature]
    props += [f"{name}=on" for name in sorted(changes.on)]
    props += [f"{name}=off" for name in sorted(changes.off)]
    return props


def _escape(value: str | int) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return str(value).replace(",", ",,")
