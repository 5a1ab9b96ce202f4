"""`cpuver host probe` without hardware: KVM from a captured dump, cpuinfo and facts from a fake
root, the auto choice, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuver import api
from cpuver.catalog.files import BUNDLED
from cpuver.cli import main
from cpuver.errors import HostError, QemuError
from cpuver.host import kvm
from cpuver.host.capabilities import from_json

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fake / with an Intel Haswell /proc/cpuinfo, kernel release and vulnerabilities."""
    kernel = tmp_path / "proc/sys/kernel"
    kernel.mkdir(parents=True)
    (kernel / "hostname").write_text("node7\n")
    (kernel / "osrelease").write_text("6.1.0-18-amd64\n")
    (tmp_path / "proc/cpuinfo").write_text((HOSTS / "cpuinfo-intel-haswell.txt").read_text())
    vulns = tmp_path / "sys/devices/system/cpu/vulnerabilities"
    vulns.mkdir(parents=True)
    (vulns / "tsx_async_abort").write_text("Mitigation: TSX disabled\n")
    return tmp_path


@pytest.fixture
def fake_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A usable "/dev/kvm" whose ioctls answer from the AMD EPYC machine's recorded dump."""
    device = tmp_path / "kvm"
    device.write_text("")
    dump = kvm.KvmDump.from_json(json.loads((HOSTS / "amd-epyc-zen4-nested-kvm.json").read_text()))
    monkeypatch.setattr(kvm, "read_kvm", lambda path="/dev/kvm": dump)
    monkeypatch.setattr(kvm, "kvm_usable", lambda path="/dev/kvm": str(path) == str(device))
    return str(device)


def test_cpuinfo_probe_offers_the_cpus_flags_for_kvm_per_bundled_release(root: Path) -> None:
    host = api.probe_host("cpuinfo", root=root)
    assert set(host.releases) == set(BUNDLED)
    assert {"hle", "rtm", "md-clear"} <= (host.offered("kvm", "10.0") or set())


def test_cpuinfo_probe_adds_the_paravirtual_features_kvm_supplies(root: Path) -> None:
    offered = api.probe_host("cpuinfo", root=root).offered("kvm", "10.0") or frozenset()
    assert api.open_catalog("10.0").accelerator("kvm").defaults.on <= offered


def test_cpuinfo_probe_is_marked_approximate(root: Path) -> None:
    offer = api.probe_host("cpuinfo", root=root).offer("kvm", "10.0")
    assert offer is not None
    assert offer.approximate
    assert "not what KVM offers" in (offer.note or "")


def test_probe_records_host_facts(root: Path) -> None:
    host = api.probe_host("cpuinfo", root=root)
    assert host.name == "node7"
    assert host.facts is not None
    assert (host.facts.microcode, host.facts.kernel) == ("0x49", "6.1.0-18-amd64")
    assert host.facts.vulnerabilities == {"tsx_async_abort": "Mitigation: TSX disabled"}


def test_tcg_offers_come_from_the_catalog_and_say_so(root: Path) -> None:
    offer = api.probe_host("cpuinfo", root=root).offer("tcg", "10.0")
    assert offer is not None
    assert offer.features == api.open_catalog("10.0").tcg_offers
    assert offer.method == "catalog"
    assert "every host" in (offer.note or "")


def test_kvm_probe_offers_what_kvm_offers_filtered_per_release(root: Path, fake_kvm: str) -> None:
    host = api.probe_host("kvm", root=root, kvm_path=fake_kvm)
    dump = kvm.read_kvm()
    for release in BUNDLED:
        known = api.open_catalog(release).known_features
        major, minor = map(int, release.split("."))
        assert host.offered("kvm", release) == kvm.kvm_offers(dump, known, (major, minor))


def test_kvm_probe_provenance_says_kvm(root: Path, fake_kvm: str) -> None:
    offer = api.probe_host("kvm", root=root, kvm_path=fake_kvm).offer("kvm")
    assert offer is not None
    assert (offer.method, offer.approximate) == ("kvm", False)


def test_auto_uses_kvm_when_the_device_is_usable(root: Path, fake_kvm: str) -> None:
    said: list[str] = []
    host = api.probe_host("auto", root=root, kvm_path=fake_kvm, progress=said.append)
    assert host.method == "kvm"
    assert said[0].startswith("probing with kvm")


def test_auto_falls_back_to_cpuinfo_without_kvm_and_qemu(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.hosts, "default_qemu_binary", lambda: None)
    said: list[str] = []
    host = api.probe_host(
        "auto", root=root, kvm_path=str(tmp_path / "no-kvm"), progress=said.append
    )
    assert host.method == "cpuinfo"
    assert said[0].startswith("probing with cpuinfo")


def test_kvm_probe_without_a_kvm_device_says_so(root: Path, tmp_path: Path) -> None:
    with pytest.raises(HostError, match="no such device"):
        api.probe_host("kvm", root=root, kvm_path=str(tmp_path / "no-kvm"))


def test_qemu_probe_with_a_missing_binary_names_it(root: Path, tmp_path: Path) -> None:
    with pytest.raises(QemuError, match=r"^no QEMU binary at .*/qemu-nope$"):
        api.probe_host("qemu", [tmp_path / "qemu-nope"], root=root)


def test_qemu_probe_with_a_failing_binary_says_it_failed(root: Path, tmp_path: Path) -> None:
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    binary.chmod(0o755)
    with pytest.raises(QemuError, match="-version failed: broken"):
        api.probe_host("qemu", [binary], root=root)


def test_probed_snapshot_round_trips(root: Path, fake_kvm: str) -> None:
    host = api.probe_host("kvm", root=root, kvm_path=fake_kvm)
    assert from_json(json.loads(api.write_host(host, None)), "local") == host


def test_cli_probe_via_cpuinfo_then_show_says_approximate(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = api.probe_host
    monkeypatch.setattr(
        api, "probe_host", lambda via, qemu, progress: real(via, qemu, progress, root)
    )
    out = tmp_path / "snap.json"
    assert main(["host", "probe", "--via", "cpuinfo", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["schema"] == "cpuver-host/2"
    capsys.readouterr()
    assert main(["host", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "APPROXIMATE" in shown
    assert "microcode: 0x49" in shown


def test_read_host_local_probes_with_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def probe(via: str, qemu: object = ()) -> object:
        seen.append(via)
        return "probed"

    monkeypatch.setattr(api.hosts, "probe_host", probe)
    assert api.read_host("local") == "probed"
    assert seen == ["auto"]
