"""Catalogs for QEMU releases 4.1 … 10.2 and 11.1: imported, or derived from the imported ones and
QEMU's history."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from cpuver.catalog import Catalog
from cpuver.catalog.files import bundled_dir, load
from cpuver.catalog.releases import catalog_for_release, derive, supported_releases
from cpuver.errors import CatalogError, UnknownRelease
from cpuver.features import FeatureTable
from cpuver.models import BareRule, Delta
from cpuver.resolve import Resolver


def history() -> dict[str, Any]:
    text = resources.files("cpuver.catalog").joinpath("data", "qemu-history.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def counts(catalog: Catalog) -> dict[str, int]:
    versions = [v for model in catalog.models.values() for v in model.versions]
    return {
        "models": len(catalog.models),
        "versions": len(versions),
        "alias-names": sum(len(v.aliases) for v in versions),
    }


def facts_counts(release: str) -> dict[str, int]:
    return dict(history()["counts"][f"{release}.0"])


def props_delta(props: list[list[str]]) -> Delta:
    """What QEMU's props say, in the catalog's terms (internal ``x-`` switches are no features)."""
    on = {name for name, value in props if value == "on" and not name.startswith("x-")}
    off = {name for name, value in props if value == "off" and not name.startswith("x-")}
    signature = {
        name: value if name == "model-id" else int(value, 0)
        for name, value in props
        if name in ("model-id", "family", "model", "stepping")
    }
    return Delta(frozenset(on), frozenset(off), tuple(sorted(signature.items())))


# ---------------------------------------------------------------------------------- which catalog


def test_supported_releases_are_4_1_to_10_2_and_the_imported_11_1() -> None:
    releases = supported_releases()
    assert (releases[0], releases[-2], releases[-1], len(releases)) == ("4.1", "10.2", "11.1", 21)


@pytest.mark.parametrize(
    "release", ["4.0", "3.1", "10.3", "11.0", "11.2", "5.3", "8", "8.1.x", "latest"]
)
def test_release_outside_the_described_ones_raises_unknown_release(release: str) -> None:
    with pytest.raises(UnknownRelease) as caught:
        catalog_for_release(release)
    assert "cpuver describes QEMU 4.1 to 10.2 and 11.1" in str(caught.value)
    assert "QEMU's history ends at 10.2" in str(caught.value)
    assert caught.value.suggestions == supported_releases()


@pytest.mark.parametrize(
    ("release", "build"),
    [("5.2", "5.2.0"), ("7.2", "7.2.22"), ("10.0.1", "10.0.13"), ("11.1", "11.1.3")],
)
def test_the_imported_releases_are_their_debian_builds(release: str, build: str) -> None:
    catalog = catalog_for_release(release)
    assert catalog.release == build
    assert catalog.source.startswith("bundled qemu-")


def test_a_stable_release_is_described_by_its_x_y_0_release() -> None:
    assert catalog_for_release("8.1.3").release == "8.1.0"


@pytest.mark.parametrize(
    ("release", "base"),
    [("4.1", "5.2.0"), ("6.0", "7.2.22"), ("9.2", "10.0.13"), ("10.1", "11.1.3")],
)
def test_build_says_how_the_catalog_was_derived_and_from_the_nearest_newer_import(
    release: str, base: str
) -> None:
    build = catalog_for_release(release).build
    assert build.startswith(f"derived for QEMU {release}.0 from QEMU emulator version {base} ")
    assert "using QEMU's version history" in build


# ---------------------------------------------------------------------------------- 8.1


def test_8_1_has_sapphirerapids_v2_but_not_v3() -> None:
    catalog = catalog_for_release("8.1")
    assert [v.name for v in catalog.models["SapphireRapids"].versions] == [
        "SapphireRapids-v1",
        "SapphireRapids-v2",
    ]


def test_8_1_machine_types_stop_at_pc_q35_8_1() -> None:
    catalog = catalog_for_release("8.1")
    releases = {m.release for m in catalog.machines.values() if m.release}
    assert max(releases) == (8, 1)
    assert catalog.default_machine == "pc-q35-8.1"
    assert {"none", "isapc", "microvm"} <= set(catalog.machines)


def test_pc_and_q35_aliases_move_to_the_newest_machine_types_of_the_release() -> None:
    catalog = catalog_for_release("8.1")
    assert catalog.machine("q35").name == "pc-q35-8.1"
    assert catalog.machine("pc").name == "pc-i440fx-8.1"


def test_models_first_released_later_are_left_out() -> None:
    catalog = catalog_for_release("8.1")
    assert "SierraForest" not in catalog.models  # since 9.1.0
    assert "GraniteRapids" in catalog.models  # since 8.1.0


# ---------------------------------------------------------------------------------- 10.1


def test_10_1_has_epyc_turin_v1_and_sapphirerapids_v4() -> None:
    catalog = catalog_for_release("10.1")
    assert catalog.lookup("EPYC-Turin-v1").version is not None
    assert catalog.models["SapphireRapids"].latest.name == "SapphireRapids-v4"


def test_10_1_sapphirerapids_v4_adds_exactly_the_features_of_its_props() -> None:
    """Its only prop, x-force-cpuid-0x1f, is an internal switch: no feature changes."""
    props = history()["versions"]["SapphireRapids-v4"]["props"]
    v3, v4 = catalog_for_release("10.1").models["SapphireRapids"].versions[2:4]
    assert Delta.between(v3.definition, v4.definition) == props_delta(props) == Delta()


NEW_IN_10_1 = [
    name
    for name, entry in history()["versions"].items()
    if entry["since"] == "10.1.0" and not name.endswith("-v1")
]


@pytest.mark.parametrize("name", NEW_IN_10_1)
def test_10_1_version_differs_from_the_one_before_exactly_by_its_props(name: str) -> None:
    """Also holds for YongFeng-v2, which comes from Debian's 10.0.2 build, not from the props."""
    catalog = catalog_for_release("10.1")
    version = catalog.lookup(name).version
    assert version is not None and version.number > 1
    before = catalog.models[version.model].versions[version.number - 2]
    props = history()["versions"][name]["props"]
    assert Delta.between(before.definition, version.definition) == props_delta(props)
    assert version.since == "10.1.0"


def test_10_1_epyc_turin_v1_is_its_base_definition_with_hypervisor() -> None:
    facts = history()["models"]["EPYC-Turin"]
    turin = catalog_for_release("10.1").models["EPYC-Turin"].versions[0].definition
    assert turin.features == {*facts["features"], "hypervisor"}
    signature = turin.signature.as_dict()
    assert {key: signature[key] for key in ("family", "model-id", "min-level", "min-xlevel")} == {
        "family": 26,
        "model-id": "AMD EPYC-Turin Processor",
        "min-level": 0xD,
        "min-xlevel": 0x80000022,
    }


def test_10_1_cut_back_from_11_1_has_its_own_machine_types() -> None:
    catalog = catalog_for_release("10.1")
    assert catalog.default_machine == "pc-q35-10.1"
    assert "pc-q35-10.2" not in catalog.machines
    assert "not modelled" not in catalog.build


def test_machine_types_the_newer_import_lost_come_from_the_older_one() -> None:
    """QEMU 11.1 no longer has pc-*-2.6 … 5.1; 10.1 still had them, as 10.0 did."""
    catalog = catalog_for_release("10.1")
    assert catalog.machines["pc-i440fx-2.6"] == load(bundled_dir("10.0")).machines["pc-i440fx-2.6"]
    assert "from QEMU emulator version 10.0.13" in catalog.build
    assert "29 old machine types (pc-i440fx-2.6 … pc-q35-5.1)" in catalog.build


def test_10_1_drops_the_machine_types_qemu_removed_after_10_0() -> None:
    machines = catalog_for_release("10.1").machines
    assert not {"pc-i440fx-2.4", "pc-i440fx-2.5", "pc-q35-2.4", "pc-q35-2.5"} & set(machines)
    assert "pc-i440fx-2.6" in machines


def test_a_prop_naming_an_unknown_feature_is_a_catalog_error() -> None:
    facts = copy.deepcopy(history())
    facts["versions"]["EPYC-v5"]["props"][0] = ["avx9000", "on"]
    base = load(bundled_dir("10.0"))
    with pytest.raises(CatalogError) as caught:
        derive(base, (10, 1, 0), facts, FeatureTable.bundled())
    assert caught.value.where == "qemu-history.json: versions.EPYC-v5.props[0]"
    assert "unknown CPU feature 'avx9000'" in caught.value.problem


# ---------------------------------------------------------------------------------- older


def definitions(catalog: Catalog) -> dict[str, Any]:
    return {v.name: v.definition for model in catalog.models.values() for v in model.versions}


def test_deriving_7_2_from_the_10_0_build_gives_every_bundled_7_2_definition() -> None:
    """The derivation checked against a real build: 10.0.13 cut back to 7.2 equals 7.2.22."""
    bundled = load(bundled_dir("7.2"))
    derived = derive(load(bundled_dir("10.0")), (7, 2, 0), history(), FeatureTable.bundled())
    assert definitions(derived) == definitions(bundled)


def test_deriving_10_0_from_the_11_1_build_gives_every_upstream_10_0_definition() -> None:
    """11.1.3 cut back to 10.0 equals 10.0.13, except Debian's backport of YongFeng-v2 (10.1)."""
    bundled = definitions(load(bundled_dir("10.0")))
    derived = derive(load(bundled_dir("11.1")), (10, 0, 0), history(), FeatureTable.bundled())
    assert definitions(derived) == {n: d for n, d in bundled.items() if n != "YongFeng-v2"}


def test_deriving_5_2_from_the_7_2_build_gives_every_5_2_definition() -> None:
    """Checked against the real 5.2 build; qemu64 is put back to family/model/stepping 6/6/3,
    which QEMU changed in 6.1 without a new version. Icelake-Client, removed in 7.1, needs the
    5.2 import itself."""
    bundled = definitions(load(bundled_dir("5.2")))
    derived = definitions(
        derive(load(bundled_dir("7.2")), (5, 2, 0), history(), FeatureTable.bundled())
    )
    assert set(bundled) - set(derived) == {"Icelake-Client-v1", "Icelake-Client-v2"}
    assert {n for n in derived if derived[n] != bundled[n]} == set()


def test_a_base_definition_edit_applies_only_in_its_releases() -> None:
    """QEMU 6.1.0 alone gave every Cooperlake version avx-vnni (libvirt's recording refuses it)."""
    assert (
        "avx-vnni"
        in catalog_for_release("6.1").models["Cooperlake"].versions[0].definition.features
    )
    assert (
        "avx-vnni"
        not in catalog_for_release("6.0").models["Cooperlake"].versions[0].definition.features
    )
    assert (
        "avx-vnni"
        not in catalog_for_release("6.2").models["Cooperlake"].versions[0].definition.features
    )


def test_a_derived_catalog_knows_only_the_feature_names_of_its_release() -> None:
    assert "amd-stibp" not in catalog_for_release("4.2").known_features  # since 5.0
    assert "amd-stibp" in catalog_for_release("5.0").known_features
    assert "its-no" not in catalog_for_release("10.0").known_features  # since 10.1


def test_a_version_edited_after_its_release_is_put_back_as_first_released() -> None:
    """Skylake-Client-v3 got its own model-id in 5.0.0; in 4.2 it had v2's."""
    before = catalog_for_release("4.2").models["Skylake-Client"].versions
    after = catalog_for_release("5.0").models["Skylake-Client"].versions
    assert before[2].definition.signature.model_id == "Intel Core Processor (Skylake, IBRS)"
    assert after[2].definition.signature.model_id == "Intel Core Processor (Skylake, IBRS, no TSX)"
    assert before[2].definition.features == after[2].definition.features


@pytest.mark.parametrize("release", ["4.1", "4.2"])
def test_machine_none_gives_the_latest_version_before_5_0(release: str) -> None:
    assert catalog_for_release(release).machines["none"].bare is BareRule.LATEST
    assert catalog_for_release("5.0").machines["none"].bare is BareRule.V1


# ---------------------------------------------------------------------------------- counts


ALL_DERIVED_AND_7_2 = (
    *("4.1", "4.2", "5.0", "5.1", "5.2", "6.0", "6.1", "6.2", "7.0", "7.1", "7.2"),
    *("8.0", "8.1", "8.2", "9.0", "9.1", "9.2", "10.1", "10.2"),
)


@pytest.mark.parametrize("release", ALL_DERIVED_AND_7_2)
def test_counts_match_qemus_counts(release: str) -> None:
    assert counts(catalog_for_release(release)) == facts_counts(release)


@pytest.mark.parametrize("release", ["6.0", "6.1", "6.2", "7.0"])
def test_icelake_client_comes_from_the_5_2_import_until_qemu_removed_it(release: str) -> None:
    catalog = catalog_for_release(release)
    icelake = catalog.models["Icelake-Client"].versions
    assert (
        icelake[0].definition
        == load(bundled_dir("5.2")).models["Icelake-Client"].versions[0].definition
    )
    assert "from QEMU emulator version 5.2.0" in catalog.build
    assert "Icelake-Client" not in catalog_for_release("7.1").models


def test_11_1_has_the_versions_newer_than_qemus_history() -> None:
    catalog = catalog_for_release("11.1")
    new = {v.name for m in catalog.models.values() for v in m.versions if v.since is None}
    assert {"DiamondRapids-v1", "EPYC-Turin-v2", "SapphireRapids-v5", "GraniteRapids-v4"} <= new
    assert not new & {
        v.name for m in catalog_for_release("10.2").models.values() for v in m.versions
    }


def test_10_0_counts_have_debians_backported_yongfeng_v2() -> None:
    expected = facts_counts("10.0")
    catalog = catalog_for_release("10.0")
    assert counts(catalog) == {**expected, "versions": expected["versions"] + 1}
    assert catalog.lookup("YongFeng-v2").version is not None


@pytest.mark.parametrize("release", ["5.2", "6.0", "7.1"])
def test_tcg_before_7_2_cannot_run_avx(release: str) -> None:
    """TCG learned AVX in 7.2: QEMU 5.2 (imported) and 6.0, 7.1 (derived, TCG as QEMU answered
    libvirt) refuse Broadwell's avx, avx2, f16c and fma."""
    catalog = catalog_for_release(release)
    resolver = Resolver(catalog, "none", "tcg", None)
    assert {"avx", "avx2", "f16c", "fma"} <= set(
        resolver.unavailable(catalog.lookup("Broadwell-v1"))
    )
    assert "avx" not in Resolver(catalog_for_release("7.2"), "none", "tcg", None).unavailable(
        catalog_for_release("7.2").lookup("Broadwell-v1")
    )


def test_qemu_5_2_has_its_icelake_client_models() -> None:
    catalog = catalog_for_release("5.2")
    assert [v.name for v in catalog.models["Icelake-Client"].versions] == [
        "Icelake-Client-v1",
        "Icelake-Client-v2",
    ]
    assert catalog.models["Icelake-Client"].deprecated
