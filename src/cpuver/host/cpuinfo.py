"""Read ``/proc/cpuinfo``: the CPU's identity and its Linux flags, mapped to QEMU features.

What Linux shows is what the CPU (as the kernel sees it) has, not what KVM lets a guest have:
KVM hides some features and adds others. Features from here are therefore approximate, and every
snapshot made from them says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpuver.errors import HostError
from cpuver.features import FeatureSet, FeatureTable

APPROXIMATE_NOTE = (
    "approximate: the CPU as /proc/cpuinfo shows it (plus KVM's paravirtual defaults), "
    "not what KVM offers"
)


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The first processor of ``/proc/cpuinfo`` (all processors of a host are alike)."""

    vendor: str
    brand: str
    family: int | None
    model: int | None
    stepping: int | None
    microcode: str | None
    flags: frozenset[str]


def parse_cpuinfo(text: str, source: str = "/proc/cpuinfo") -> CpuInfo:
    """The first ``processor`` block of a ``/proc/cpuinfo`` text; HostError names a bad field."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if "vendor_id" not in fields:
        raise HostError(f"{source}: vendor_id: missing (not an x86 /proc/cpuinfo?)")
    if "flags" not in fields:
        raise HostError(f"{source}: flags: missing")
    return CpuInfo(
        vendor=fields["vendor_id"],
        brand=fields.get("model name", ""),
        family=_number(fields, "cpu family", source),
        model=_number(fields, "model", source),
        stepping=_number(fields, "stepping", source),
        microcode=fields.get("microcode") or None,
        flags=frozenset(fields["flags"].split()),
    )


def _number(fields: dict[str, str], key: str, source: str) -> int | None:
    value = fields.get(key)
    if value is None or value == "unknown":
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise HostError(f"{source}: {key}: expected a number, got {value!r}") from None


def read_cpuinfo(root: Path = Path("/")) -> CpuInfo:
    path = root / "proc/cpuinfo"
    try:
        text = path.read_text()
    except OSError as err:
        raise HostError(f"cannot read {path}: {err.strerror}") from err
    return parse_cpuinfo(text, str(path))


def cpuinfo_features(
    info: CpuInfo, known: FeatureSet | None = None, table: FeatureTable | None = None
) -> FeatureSet:
    """The QEMU features whose Linux flag the CPU shows (only ``known`` ones when given)."""
    features, _unmapped = (table or FeatureTable.bundled()).from_linux_flags(info.flags)
    return features & known if known is not None else features
