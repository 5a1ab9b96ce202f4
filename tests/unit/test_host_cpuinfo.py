"""Reading /proc/cpuinfo: CPU identity, microcode and Linux flags mapped to QEMU features."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuver.errors import HostError
from cpuver.host.cpuinfo import cpuinfo_features, parse_cpuinfo

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"
INTEL = (HOSTS / "cpuinfo-intel-haswell.txt").read_text()
AMD = (HOSTS / "cpuinfo-amd-epyc-nested.txt").read_text()
XEON = (HOSTS / "cpuinfo-intel-xeon-nested.txt").read_text()


def test_intel_fixture_gives_vendor_brand_and_signature() -> None:
    info = parse_cpuinfo(INTEL)
    assert (info.vendor, info.family, info.model, info.stepping) == ("GenuineIntel", 6, 63, 2)
    assert info.brand == "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz"


def test_intel_fixture_gives_the_microcode_revision() -> None:
    assert parse_cpuinfo(INTEL).microcode == "0x49"


def test_linux_flags_map_to_qemu_feature_names() -> None:
    features = cpuinfo_features(parse_cpuinfo(INTEL))
    assert {"hle", "rtm", "md-clear", "sse4.1", "lahf-lm", "pni"} <= features


def test_flags_without_a_qemu_feature_are_left_out() -> None:
    features = cpuinfo_features(parse_cpuinfo(INTEL))
    assert "constant_tsc" not in features
    assert "arch_perfmon" not in features


def test_known_restricts_the_features() -> None:
    assert cpuinfo_features(parse_cpuinfo(INTEL), frozenset({"hle", "avx512f"})) == {"hle"}


def test_amd_epyc_nested_cpuinfo_is_read() -> None:
    info = parse_cpuinfo(AMD)
    assert (info.vendor, info.family, info.model, info.microcode) == (
        "AuthenticAMD",
        25,
        17,
        "0x1000065",
    )
    assert "avx512f" in cpuinfo_features(info)


def test_intel_xeon_nested_cpuinfo_is_read() -> None:
    info = parse_cpuinfo(XEON)
    assert (info.vendor, info.family, info.model, info.stepping, info.microcode) == (
        "GenuineIntel",
        6,
        167,
        8,
        "0x1",
    )
    assert {"avx512f", "amx-tile", "md-clear"} <= cpuinfo_features(info)
    assert not {"hle", "rtm"} & cpuinfo_features(info)


def test_only_the_first_processor_is_read() -> None:
    second = INTEL.split("\n\n")[1].replace("microcode\t: 0x49", "microcode\t: 0x99")
    assert parse_cpuinfo(INTEL.split("\n\n")[0] + "\n\n" + second).microcode == "0x49"


def test_text_without_vendor_names_vendor_id() -> None:
    with pytest.raises(HostError, match=r"^cpuinfo.txt: vendor_id: "):
        parse_cpuinfo("processor\t: 0\nflags\t: fpu\n", "cpuinfo.txt")


def test_bad_number_names_its_field() -> None:
    text = INTEL.replace("cpu family\t: 6", "cpu family\t: six", 1)
    with pytest.raises(HostError, match=r"^cpuinfo.txt: cpu family: expected a number"):
        parse_cpuinfo(text, "cpuinfo.txt")
