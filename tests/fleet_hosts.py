"""Hosts for pool and service tests: KVM offers derived from the bundled QEMU 10.0 catalog."""

from __future__ import annotations

from typing import Any

from cpuver.api import open_catalog
from cpuver.host.capabilities import HostCapabilities

TSX = frozenset({"hle", "rtm"})


def capable(*versions: str) -> frozenset[str]:
    """Every feature the given versioned names need under KVM on the default machine type
    (default: Haswell-v3 and Cooperlake-v2, a host that runs every Haswell version)."""
    catalog = open_catalog("10.0")
    machine = catalog.machine(None)
    return frozenset().union(
        *(catalog.effective(catalog.lookup(name), machine, "kvm").features
          for name in versions or ("Haswell-v3", "Cooperlake-v2"))
    )  # fmt: skip


def snapshot(name: str, offers: frozenset[str]) -> dict[str, Any]:
    """A host snapshot (JSON) offering ``offers`` under KVM."""
    return HostCapabilities(name, {"kvm": offers}).to_json()
