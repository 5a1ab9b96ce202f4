"""libvirt's feature names: joined to QEMU's by CPUID/MSR location, used in the <cpu> XML.

The names come from libvirt 11.3.0's CPU map as Debian bookworm-backports ships it next to QEMU
10.0 (package libvirt-common 11.3.0-2~bpo12+1; it also knows the versioned model names such as
Haswell-v4), extracted into tools/libvirt_x86_features.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cpuver.catalog import Catalog
from cpuver.catalog.files import bundled_dir, load
from cpuver.features import Feature, FeatureTable
from cpuver.resolve import Resolution, Resolver

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBVIRT_DATA = REPO_ROOT / "tools" / "libvirt_x86_features.json"

# libvirt 11.3.0 (Debian bookworm-backports, alongside QEMU 10.0) names bits QEMU 10.2 has no
# feature for: cmt and mbm_* (resource monitoring), osxsave, ospke, cvt16, pconfig (names QEMU
# dropped from its table), vmx-ept-uc/wb (EPT memory types) and vmx-invvpid-single-context (QEMU
# calls that bit vmx-invept-single-context).
LIBVIRT_NAMES_WITHOUT_QEMU_FEATURE = frozenset(
    {
        "cmt", "cvt16", "mbm_local", "mbm_total", "ospke", "osxsave", "pconfig",
        "vmx-ept-uc", "vmx-ept-wb", "vmx-invvpid-single-context",
    }
)  # fmt: skip

# Features enabled by some version of the bundled QEMU 10.0 catalog that libvirt 11.3.0 has no
# name for: the VIA PadLock bits of YongFeng and bhi-no. libvirt would reject them in <cpu>, so
# the XML can only comment on them.
USED_BY_QEMU_10_0_WITHOUT_LIBVIRT_NAME = frozenset(
    {
        "ace2", "bhi-no", "phe", "phe-en", "pmm", "pmm-en", "xcrypt", "xcrypt-en", "xstore",
        "xstore-en",
    }
)  # fmt: skip


@pytest.fixture(scope="module")
def table() -> FeatureTable:
    return FeatureTable.bundled()


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return load(bundled_dir("10.0"))


@pytest.fixture(scope="module")
def libvirt_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LIBVIRT_DATA.read_text(encoding="utf-8"))
    return data


def resolve(catalog: Catalog, spec: str) -> Resolution:
    return Resolver(catalog, machine="pc-q35-10.0", accel="tcg").resolve(spec)


def test_pclmulqdq_is_libvirt_pclmuldq(table: FeatureTable) -> None:
    assert table.libvirt_name("pclmulqdq") == "pclmuldq"


def test_lahf_lm_is_libvirt_lahf_lm(table: FeatureTable) -> None:
    assert table.libvirt_name("lahf-lm") == "lahf_lm"


def test_every_libvirt_name_maps_to_exactly_one_qemu_feature(
    table: FeatureTable, libvirt_data: dict[str, Any]
) -> None:
    owners: dict[str, list[str]] = {}
    for name in table:
        libvirt = table.libvirt_name(name)
        if libvirt is not None:
            owners.setdefault(libvirt, []).append(name)
    assert {libvirt: len(names) for libvirt, names in owners.items() if len(names) != 1} == {}
    listed = {entry["name"] for entry in libvirt_data["features"]}
    assert set(owners) == listed - LIBVIRT_NAMES_WITHOUT_QEMU_FEATURE


def test_354_qemu_features_have_a_libvirt_name(table: FeatureTable) -> None:
    assert sum(table.libvirt_name(name) is not None for name in table) == 354


def test_qemu_10_0_models_use_only_features_with_libvirt_names_but_a_known_few(
    table: FeatureTable, q10: Catalog
) -> None:
    used = {
        feature
        for model in q10.models.values()
        for version in model.versions
        for feature in version.definition.features
    }
    without = {feature for feature in used if table.libvirt_name(feature) is None}
    assert without == USED_BY_QEMU_10_0_WITHOUT_LIBVIRT_NAME


def test_canonical_accepts_libvirt_pclmuldq(table: FeatureTable) -> None:
    assert table.canonical("pclmuldq") == "pclmulqdq"


def test_canonical_accepts_a_libvirt_only_spelling() -> None:
    custom = FeatureTable([Feature("toy-feature", None, libvirt_name="toy_libvirt")])
    assert custom.canonical("toy_libvirt") == "toy-feature"


def test_qemu_meaning_wins_over_a_libvirt_name_spelled_alike() -> None:
    custom = FeatureTable(
        [
            Feature("qemu-one", None, aliases=("shared",)),
            Feature("other", None, libvirt_name="shared"),
        ]
    )
    assert custom.canonical("shared") == "qemu-one"
