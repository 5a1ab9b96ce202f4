"""Hosts for pool and service tests: KVM offers derived from the bundled QEMU 10.0 catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cpuver.api import open_catalog
from cpuver.host.capabilities import AccelOffer, HostCapabilities, HostFacts, build

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


def probed(
    name: str,
    offers: frozenset[str],
    microcode: str = "0x2b000571",
    brand: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
    kernel: str = "6.1.0-28-amd64",
    vulnerabilities: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A probed host snapshot (``cpuver-host/2``: CPU, microcode, kernel, vulnerabilities) offering
    ``offers`` under KVM for QEMU 10.0, as ``cpuver host probe --via kvm`` writes one."""
    facts = HostFacts("GenuineIntel", brand, 6, 106, 6, microcode, kernel, vulnerabilities or {})
    when = "2026-12-01T08:00:00Z"
    releases = {"10.0": {"kvm": AccelOffer(offers, "kvm", time=when)}}
    return build(name, releases, facts, probed=when, method="kvm").to_json()


def tcg_host_file(folder: Path, name: str = "hv1") -> str:
    """A host file offering what TCG offers in QEMU 10.0 (every TCG pin runs there)."""
    path = folder / f"{name}.json"
    offers = open_catalog("10.0").tcg_offers
    path.write_text(json.dumps(HostCapabilities(name, {"tcg": offers}).to_json()))
    return str(path)


def start_on(db_url: str, guest: str, host: str) -> None:
    """What ``cpuver domain start --host HOST`` stores for a stored guest and a stored host (the
    service has no lifecycle routes of its own)."""
    from cpuver.api import guest_transition, open_store, stored_host
    from cpuver.store import HostStore

    with HostStore(db_url) as hosts:
        on = stored_host(hosts.get(host))
    guest_transition(open_store(db_url), guest, "start", host=on)
