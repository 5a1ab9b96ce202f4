"""Feature identity: names, spellings, locations and the Linux cpuinfo mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cpuver.errors import UnknownFeature
from cpuver.features import CpuidBit, Feature, FeatureTable, MsrBit

REPO_ROOT = Path(__file__).resolve().parents[2]
FACTS_PATH = REPO_ROOT / "tests" / "data" / "qemu-facts" / "qemu-features.json"
"""A copy of the project's checked QEMU facts (``../shared/qemu-facts``), so that a clone tests
the bundled table on its own."""
BUNDLED_PATH = REPO_ROOT / "src" / "cpuver" / "catalog" / "data" / "features.json"
TOOL_PATH = REPO_ROOT / "tools" / "build_feature_table.py"


@pytest.fixture(scope="module")
def table() -> FeatureTable:
    return FeatureTable.bundled()


@pytest.fixture(scope="module")
def qemu_facts() -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = json.loads(FACTS_PATH.read_text(encoding="utf-8"))["features"]
    return features


def test_bundled_table_holds_389_qemu_features(table: FeatureTable) -> None:
    assert len(table) == 389


def test_bundled_names_are_exactly_the_facts_names(
    table: FeatureTable, qemu_facts: list[dict[str, Any]]
) -> None:
    assert set(table) == {fact["name"] for fact in qemu_facts}


def test_iteration_gives_canonical_names_sorted(table: FeatureTable) -> None:
    assert list(table) == sorted(table)


def test_every_canonical_name_resolves_to_itself(table: FeatureTable) -> None:
    assert all(table.canonical(name) == name for name in table)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("lahf_lm", "lahf-lm"), ("kvm_pv_eoi", "kvm-pv-eoi"), ("vmx_invept", "vmx-invept")],
)
def test_underscores_read_as_dashes(table: FeatureTable, spelling: str, canonical: str) -> None:
    assert table.canonical(spelling) == canonical


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("sse4-1", "sse4.1"),
        ("sse4_1", "sse4.1"),
        ("sse4_2", "sse4.2"),
        ("pclmuldq", "pclmulqdq"),
        ("sse3", "pni"),
        ("xd", "nx"),
        ("i64", "lm"),
        ("ffxsr", "fxsr-opt"),
    ],
)
def test_qemu_aliases_resolve(table: FeatureTable, alias: str, canonical: str) -> None:
    assert table.canonical(alias) == canonical


@pytest.mark.parametrize(
    ("linux", "canonical"),
    [
        ("tsc_deadline_timer", "tsc-deadline"),
        ("avx512_vnni", "avx512vnni"),
        ("sha_ni", "sha-ni"),
        ("dts", "ds"),
        ("rng", "xstore"),
        ("pausefilter", "pause-filter"),
    ],
)
def test_linux_names_resolve(table: FeatureTable, linux: str, canonical: str) -> None:
    assert table.canonical(linux) == canonical


def test_unknown_feature_suggests_close_names(table: FeatureTable) -> None:
    with pytest.raises(UnknownFeature) as raised:
        table.canonical("avx512vnnii")
    assert raised.value.name == "avx512vnnii"
    assert "avx512vnni" in raised.value.suggestions
    assert len(raised.value.suggestions) <= 3


def test_unknown_feature_is_a_lookup_error(table: FeatureTable) -> None:
    with pytest.raises(LookupError):
        table.get("no-such-feature")


@pytest.mark.parametrize("spelling", ["sse4.1", "sse4_1", "tsc_deadline_timer"])
def test_membership_accepts_any_spelling(table: FeatureTable, spelling: str) -> None:
    assert spelling in table


@pytest.mark.parametrize("outsider", ["constant_tsc", "", 42])
def test_membership_rejects_unknown_names(table: FeatureTable, outsider: object) -> None:
    assert outsider not in table


def test_get_returns_feature_with_its_cpuid_location(table: FeatureTable) -> None:
    feature = table.get("sse4_1")
    assert feature.name == "sse4.1"
    assert feature.location == CpuidBit("FEAT_1_ECX", leaf=1, subleaf=None, register="ecx", bit=19)
    assert feature.aliases == ("sse4-1", "sse4_1")


def test_msr_features_carry_their_msr_location(table: FeatureTable) -> None:
    rdctl_no = table.get("rdctl-no")
    assert rdctl_no.location == MsrBit("FEAT_ARCH_CAPABILITIES", index=0x10A, bit=0)


@pytest.mark.parametrize("name", ["kvmclock", "vmx-invept-single-context"])
def test_two_bit_features_keep_both_locations(table: FeatureTable, name: str) -> None:
    feature = table.get(name)
    assert len(feature.locations) == 2
    assert feature.location == feature.locations[0]


def test_every_location_matches_the_facts(
    table: FeatureTable, qemu_facts: list[dict[str, Any]]
) -> None:
    for fact in qemu_facts:
        bits = fact["bit"] if isinstance(fact["bit"], list) else [fact["bit"]]
        expected: list[CpuidBit | MsrBit]
        if fact["kind"] == "cpuid":
            leaf = int(fact["leaf"], 16)
            expected = [
                CpuidBit(fact["word"], leaf, fact["subleaf"], fact["register"], bit) for bit in bits
            ]
        else:
            expected = [MsrBit(fact["word"], int(fact["msr_index"], 16), bit) for bit in bits]
        assert list(table.get(fact["name"]).locations) == expected, fact["name"]


@pytest.mark.parametrize(
    ("name", "linux"),
    [
        ("sse4.1", "sse4_1"),
        ("lahf-lm", "lahf_lm"),
        ("tsc-deadline", "tsc_deadline_timer"),
        ("avx512vnni", "avx512_vnni"),
        ("pni", "pni"),
        ("ht", "ht"),
        ("pdpe1gb", "pdpe1gb"),
    ],
)
def test_linux_name_spot_checks(table: FeatureTable, name: str, linux: str) -> None:
    assert table.linux_name(name) == linux


def test_bits_linux_hides_have_no_linux_name(table: FeatureTable) -> None:
    assert table.linux_name("spec-ctrl") is None


def test_constant_tsc_has_no_qemu_feature(table: FeatureTable) -> None:
    assert table.from_linux_flags(["constant_tsc"]) == (frozenset(), frozenset({"constant_tsc"}))


def test_linux_flags_split_into_features_and_leftovers(table: FeatureTable) -> None:
    features, leftovers = table.from_linux_flags(["sse4_1", "pni", "ht", "constant_tsc", "ibpb"])
    assert features == {"sse4.1", "pni", "ht"}
    assert leftovers == {"constant_tsc", "ibpb"}


def test_custom_table_resolves_its_own_features() -> None:
    custom = FeatureTable([Feature("toy-feature", None, aliases=("toy_alias",), linux_name="toy")])
    assert custom.canonical("toy-alias") == "toy-feature"
    assert custom.canonical("toy") == "toy-feature"
    assert custom.get("toy_feature").locations == ()


def test_duplicate_feature_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        FeatureTable([Feature("twice", None), Feature("twice", None)])


def test_one_spelling_for_two_features_is_rejected() -> None:
    with pytest.raises(ValueError, match="names both"):
        FeatureTable([Feature("a-b", None), Feature("c", None, aliases=("a_b",))])


def test_tool_regenerates_bundled_json_byte_identically(tmp_path: Path) -> None:
    output = tmp_path / "features.json"
    subprocess.run(
        [sys.executable, str(TOOL_PATH), str(FACTS_PATH), "--output", str(output)],
        check=True,
        capture_output=True,
    )
    assert output.read_bytes() == BUNDLED_PATH.read_bytes()


def test_canonical_set_reads_any_spelling_and_names_the_first_unknown() -> None:
    table = FeatureTable.bundled()
    found = table.canonical_set(["sse4_2", "sse4.2", "lahf_lm", "avx"])
    assert found == {"sse4.2", "lahf-lm", "avx"}
    with pytest.raises(UnknownFeature) as err:
        table.canonical_set(["avx", "avx3", "nope"])
    assert err.value.name == "avx3"
