"""Host facts read below a root folder, so /proc and /sys can be faked."""

from __future__ import annotations

from pathlib import Path

from cpuver.host.system import host_name, read_facts, vulnerabilities

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"


def fake_root(tmp_path: Path, hostname: str | None = "node7") -> Path:
    kernel = tmp_path / "proc/sys/kernel"
    kernel.mkdir(parents=True)
    if hostname is not None:
        (kernel / "hostname").write_text(f"{hostname}\n")
    (kernel / "osrelease").write_text("6.1.0-18-amd64\n")
    (tmp_path / "proc/cpuinfo").write_text((HOSTS / "cpuinfo-intel-haswell.txt").read_text())
    vulns = tmp_path / "sys/devices/system/cpu/vulnerabilities"
    vulns.mkdir(parents=True)
    (vulns / "mds").write_text("Mitigation: Clear CPU buffers; SMT vulnerable\n")
    (vulns / "meltdown").write_text("Not affected\n")
    return tmp_path


def test_facts_come_from_the_fake_root(tmp_path: Path) -> None:
    facts = read_facts(fake_root(tmp_path))
    assert (facts.vendor, facts.family, facts.model, facts.stepping) == ("GenuineIntel", 6, 63, 2)
    assert (facts.microcode, facts.kernel) == ("0x49", "6.1.0-18-amd64")


def test_vulnerabilities_map_name_to_text(tmp_path: Path) -> None:
    assert vulnerabilities(fake_root(tmp_path)) == {
        "mds": "Mitigation: Clear CPU buffers; SMT vulnerable",
        "meltdown": "Not affected",
    }


def test_no_vulnerabilities_folder_gives_none(tmp_path: Path) -> None:
    assert vulnerabilities(tmp_path) == {}


def test_host_name_is_read_from_proc(tmp_path: Path) -> None:
    assert host_name(fake_root(tmp_path)) == "node7"


def test_host_name_falls_back_to_uname(tmp_path: Path) -> None:
    assert host_name(fake_root(tmp_path, hostname=None))
