"""What QEMU adds to a vCPU for the guest's topology, on top of its CPU model.

QEMU 10.0 and later set two feature bits of the vCPU object itself when a package (socket) holds
more than one thread (dies x clusters x cores x threads > 1), after the user's ``-cpu`` options,
so they cannot be switched off (``x86_cpu_expand_features`` in target/i386/cpu.c): ``ht``
(CPUID.01H:EDX HTT), and ``cmp-legacy`` (CPUID.80000001H:ECX) for a vendor other than Intel and
Zhaoxin. Older releases set those bits only in the CPUID answer, not as properties of the vCPU.
libvirt's ``check='full'`` compares the vCPU's properties with the domain's ``<cpu>``, so a pin
for a multi-core domain must have them on. ``tests/oracle/test_topology.py`` checks this table
against the bundled QEMU builds.
"""

from __future__ import annotations

from dataclasses import replace

from cpuver.domain.pinning import Pin
from cpuver.models import Delta

_SETS_BITS_FROM = (10, 0)
"""The first QEMU release whose vCPU object gets the topology bits (checked live: 5.2 and 7.2
do not, 10.0 and 11.1 do)."""
_NO_CMP_LEGACY = frozenset({"GenuineIntel", "CentaurHauls", "  Shanghai  "})
"""Vendors that get ``ht`` only: Intel, and Zhaoxin (both of its vendor strings)."""


def topology_delta(release: str, vendor: str, threads_per_package: int) -> Delta:
    """The features QEMU ``release`` (``X.Y`` or ``X.Y.Z``) switches on for this topology."""
    major, minor = (int(part) for part in release.split(".")[:2])
    if threads_per_package <= 1 or (major, minor) < _SETS_BITS_FROM:
        return Delta()
    on = {"ht"} if vendor in _NO_CMP_LEGACY else {"ht", "cmp-legacy"}
    return Delta(on=frozenset(on))


def with_topology(pin: Pin, threads_per_package: int) -> Pin:
    """``pin`` as QEMU realizes it for a guest with ``threads_per_package`` threads per socket."""
    delta = topology_delta(pin.catalog_release, pin.signature.vendor, threads_per_package)
    if not delta or delta.on <= pin.on:
        return pin
    return replace(
        pin,
        features_on=tuple(pin.on | delta.on),
        features_off=tuple(pin.off - delta.on),
    )
