"""libvirt's domcapabilities read as a host (host/domcaps.py): recorded from libvirt 11.3 with
QEMU 10.0.2 on this project's Intel Xeon VM (nested KVM), TCG and KVM. Live daemons:
tests/libvirt/test_libvirt_hosts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuver import api
from cpuver.errors import HostError
from cpuver.host.domcaps import PROBE_MACHINE, parse_domain_capabilities
from cpuver.resolve import Resolver

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"
RECORDED = {
    "tcg": HOSTS / "domcaps-intel-xeon-nested-qemu.xml",
    "kvm": HOSTS / "domcaps-intel-xeon-nested-kvm.xml",
}


@pytest.mark.parametrize("accel", sorted(RECORDED))
def test_blockers_of_every_model_are_libvirts(accel: str) -> None:
    text = RECORDED[accel].read_text()
    caps = parse_domain_capabilities(text, RECORDED[accel].name)
    host = api.read_host(str(RECORDED[accel]))
    catalog = api.open_catalog("10.0")
    resolver = Resolver(catalog, PROBE_MACHINE, accel, host)
    for name, blockers in caps.blockers.items():
        assert frozenset(resolver.unavailable(catalog.lookup(name))) == blockers, name
        assert caps.usable[name] == (not blockers), name


def test_the_host_is_named_after_the_file_and_says_how_it_was_read() -> None:
    host = api.read_host(str(RECORDED["tcg"]))
    assert (host.name, host.method) == ("domcaps-intel-xeon-nested-qemu", "libvirt")
    assert set(host.releases) == {"10.0"} and set(host.releases["10.0"]) == {"tcg"}


def test_libvirt_spellings_in_blockers_are_read_as_qemus_names() -> None:
    caps = parse_domain_capabilities(RECORDED["tcg"].read_text(), "x")
    assert "tsc-deadline" in caps.blockers["Broadwell"]
    assert all("_" not in f for blockers in caps.blockers.values() for f in blockers)


def test_an_unknown_blocker_is_named(tmp_path: Path) -> None:
    text = RECORDED["tcg"].read_text()
    text = text.replace("<feature name='hle'/>", "<feature name='hlee'/>", 1)
    with pytest.raises(HostError, match=r"blockers of .*: unknown feature 'hlee'"):
        parse_domain_capabilities(text, "caps.xml")


def test_a_document_that_is_not_domcapabilities_is_refused() -> None:
    with pytest.raises(HostError, match="expected <domainCapabilities>, found <capabilities>"):
        parse_domain_capabilities("<capabilities/>", "caps.xml")
    with pytest.raises(HostError, match=r"caps\.xml: line 1, column .*: malformed XML"):
        parse_domain_capabilities("<domainCapabilities>", "caps.xml")


def test_fleet_add_stores_a_domcapabilities_file(tmp_path: Path) -> None:
    store = api.open_host_store(f"sqlite:///{tmp_path / 'f.db'}")
    added = api.add_host_files(store, [str(RECORDED["kvm"])], ["lab"])
    assert [record.name for record in added] == ["domcaps-intel-xeon-nested-kvm"]
    stored = api.stored_host(added[0])
    assert stored.offered("kvm", "10.0") == api.read_host(str(RECORDED["kvm"])).offered("kvm")
