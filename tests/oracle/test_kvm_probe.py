"""The ioctl probe of /dev/kvm says what QEMU itself says KVM offers on this machine.

For each release (5.2, 7.2, 10.0, 11.1): the features :func:`cpuver.host.kvm.kvm_offers` decodes
from the live ``/dev/kvm`` answer, restricted to what the release knows, are exactly those QEMU's
own filter
lets a guest have (:func:`cpuver.host.qemu.offered_features`); and with that answer as the host,
cpuver's blockers of every model name are QEMU's ``unavailable-features`` under ``-accel kvm``.
"""

from __future__ import annotations

import pytest

from cpuver.catalog import Catalog
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.kvm import kvm_offers, kvm_vendor, read_kvm
from cpuver.host.qemu import offered_features

from .qemu_oracle import Oracle, report
from .test_blockers import blocker_problems

pytestmark = [pytest.mark.qemu, pytest.mark.kvm]


def release_of(catalog: Catalog) -> tuple[int, int]:
    major, minor = catalog.release_tuple[:2]
    return major, minor


def test_kvm_probe_offers_what_qemu_offers(catalog: Catalog, oracle: Oracle) -> None:
    ours = kvm_offers(read_kvm(), catalog.known_features, release_of(catalog))
    theirs, _ = offered_features(oracle.install, "kvm")
    assert ours == theirs, (
        f"QEMU {catalog.release}: only the ioctl probe offers {sorted(ours - theirs)}, "
        f"only QEMU offers {sorted(theirs - ours)}"
    )


def test_kvm_probe_vendor_is_qemus(catalog: Catalog, oracle: Oracle) -> None:
    _, vendor = offered_features(oracle.install, "kvm")
    assert kvm_vendor(read_kvm()) == vendor


def test_blockers_from_kvm_probe_equal_unavailable_features(
    catalog: Catalog, oracle: Oracle
) -> None:
    dump = read_kvm()
    offers = kvm_offers(dump, catalog.known_features, release_of(catalog))
    host = HostCapabilities("this machine (ioctl probe)", {"kvm": offers}, kvm_vendor(dump))
    problems = blocker_problems(catalog, oracle, "kvm", host)
    assert not problems, report("names whose blockers differ from QEMU (KVM, ioctl)", problems)
