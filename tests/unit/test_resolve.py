"""Resolution rules (design.md §2) against the bundled catalogs imported from real QEMU."""

from __future__ import annotations

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.errors import (
    HostError,
    InvalidSpec,
    NotRunnable,
    UnknownFeature,
    UnknownRelease,
    UnknownVersion,
)
from cpuver.features import FeatureSet
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolution, Resolver, Rule

TSX = frozenset({"hle", "rtm"})


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


@pytest.fixture(scope="module")
def q72() -> Catalog:
    return open_catalog("7.2")


@pytest.fixture(params=["7.2", "10.0"], scope="module")
def any_catalog(request: pytest.FixtureRequest) -> Catalog:
    return open_catalog(request.param)


def resolve(
    catalog: Catalog, spec: str, machine: str | None = None, accel: str = "tcg"
) -> Resolution:
    return Resolver(catalog, machine=machine, accel=accel).resolve(spec)


def features_of(catalog: Catalog, name: str, accel: str = "kvm") -> FeatureSet:
    """What ``name`` enables under ``accel`` on the default machine type."""
    return resolve(catalog, name, accel=accel).definition.features


def kvm_host(offers: FeatureSet, vendor: str = "GenuineIntel") -> HostCapabilities:
    return HostCapabilities("test-host", {"kvm": offers}, vendor)


def amd_like_host(catalog: Catalog) -> HostCapabilities:
    """Offers everything Haswell-v4 needs under KVM, and no TSX (hle/rtm)."""
    offers = features_of(catalog, "Haswell-v4")
    assert not offers & TSX
    return kvm_host(offers, "AuthenticAMD")


def best(
    catalog: Catalog, host: HostCapabilities, spec: str = "Haswell,version=best"
) -> Resolution:
    return Resolver(catalog, accel="kvm", host=host).resolve(spec)


# ------------------------------------------------------------------------------ bare names


def test_bare_name_under_current_q35_is_v1_by_the_machine_type_rule(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell", machine="pc-q35-10.0")
    assert (resolution.name, resolution.version.name) == ("Haswell-v1", "Haswell-v1")
    assert resolution.rule is Rule.MACHINE
    assert resolution.definition == resolve(q10, "Haswell-v1", machine="pc-q35-10.0").definition


@pytest.mark.parametrize(("release", "machine"), [("7.2", "pc-q35-7.2"), ("10.0", "pc-q35-10.0")])
def test_default_machine_type_is_the_newest_q35(release: str, machine: str) -> None:
    assert resolve(open_catalog(release), "Haswell").machine == machine


def test_bare_name_under_microvm_is_the_latest_version(any_catalog: Catalog) -> None:
    resolution = resolve(any_catalog, "Haswell", machine="microvm")
    assert resolution.name == "Haswell-v4"
    assert resolution.rule is Rule.MACHINE


def test_bare_name_under_legacy_machine_is_the_revision_with_compat_changes(
    any_catalog: Catalog,
) -> None:
    resolution = resolve(any_catalog, "Haswell", machine="pc-i440fx-2.4")
    assert resolution.name == "Haswell-2.4.0"
    assert resolution.version.name == "Haswell-v1"
    assert "abm" not in resolution.definition.features
    assert resolution.definition.signature.stepping == 1


def test_versioned_name_under_legacy_machine_keeps_its_definition(any_catalog: Catalog) -> None:
    """Per-model compat properties apply to the unversioned name only, never to -vN names."""
    resolution = resolve(any_catalog, "Haswell-v1", machine="pc-i440fx-2.4")
    assert resolution.name == "Haswell-v1"
    assert "abm" in resolution.definition.features
    assert resolution.definition.signature.stepping == 4


def test_alias_names_its_fixed_version(any_catalog: Catalog) -> None:
    resolution = resolve(any_catalog, "Haswell-noTSX")
    assert (resolution.name, resolution.rule) == ("Haswell-v2", Rule.ALIAS)
    assert resolution.definition == resolve(any_catalog, "Haswell-v2").definition


def test_alias_revision_under_legacy_machine_is_not_named_like_the_bare_revision(
    q10: Catalog,
) -> None:
    bare = resolve(q10, "Haswell", machine="pc-i440fx-2.4")
    alias = resolve(q10, "Haswell-noTSX", machine="pc-i440fx-2.4")
    assert alias.definition != bare.definition
    assert alias.name != bare.name


def test_bare_name_gets_compat_properties_even_when_alias_of_is_reported(
    any_catalog: Catalog,
) -> None:
    """Under pc-q35-5.0 qemu64 is alias-of qemu64-v1, yet not equal to it."""
    signature = resolve(any_catalog, "qemu64", machine="pc-q35-5.0").definition.signature
    assert (signature.family, signature.model, signature.stepping) == (6, 6, 3)


def test_versioned_name_ignores_per_model_compat_properties(any_catalog: Catalog) -> None:
    signature = resolve(any_catalog, "qemu64-v1", machine="pc-q35-5.0").definition.signature
    assert (signature.family, signature.model, signature.stepping) == (15, 107, 1)


# ------------------------------------------------------------------------------ version=


def test_version_latest_is_the_highest_version(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell,version=latest")
    assert (resolution.name, resolution.rule) == ("Haswell-v4", Rule.LATEST)


@pytest.mark.parametrize("selector", ["3", "v3"])
def test_version_number_with_or_without_v_is_that_version(q10: Catalog, selector: str) -> None:
    resolution = resolve(q10, f"Haswell,version={selector}")
    assert (resolution.name, resolution.rule) == ("Haswell-v3", Rule.EXPLICIT)
    assert resolution.definition == resolve(q10, "Haswell-v3").definition


def test_version_number_that_does_not_exist_lists_the_known_ones(q10: Catalog) -> None:
    with pytest.raises(UnknownVersion) as caught:
        resolve(q10, "Haswell,version=9")
    assert caught.value.suggestions == ("Haswell-v1", "Haswell-v2", "Haswell-v3", "Haswell-v4")


def test_version_release_is_the_bare_name_under_that_release_machine_type(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell,version=2.4.0", machine="pc-q35-10.0")
    assert (resolution.name, resolution.rule) == ("Haswell-2.4.0", Rule.RELEASE)
    assert resolution.definition == resolve(q10, "Haswell", machine="pc-i440fx-2.4").definition


def test_version_release_of_a_versioned_era_is_that_version(q10: Catalog) -> None:
    assert resolve(q10, "Haswell,version=4.1.0").name == "Haswell-v1"


def test_version_release_unknown_to_the_catalog_is_an_error(q10: Catalog) -> None:
    with pytest.raises(UnknownRelease, match=r"unknown QEMU release '2\.99\.0'"):
        resolve(q10, "Haswell,version=2.99.0")


def test_versioned_name_with_version_option_is_an_invalid_spec(q10: Catalog) -> None:
    with pytest.raises(InvalidSpec):
        resolve(q10, "Haswell-v4,version=3")


def test_alias_name_with_version_option_points_at_the_name(q10: Catalog) -> None:
    with pytest.raises(InvalidSpec) as caught:
        resolve(q10, "Haswell-noTSX,version=3")
    assert (caught.value.start, caught.value.end) == (0, len("Haswell-noTSX"))
    assert "'Haswell'" in caught.value.message


# ------------------------------------------------------------------------------ feature changes


def test_feature_changes_apply_after_the_version(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell-v3,+pdpe1gb,-hle")
    base = resolve(q10, "Haswell-v3").definition
    assert resolution.definition.features == (base.features - {"hle"}) | {"pdpe1gb"}
    assert resolution.version.name == "Haswell-v3"


def test_feature_changes_are_reported_as_changes(q10: Catalog) -> None:
    changes = resolve(q10, "Haswell-v3,+pdpe1gb,hle=off").changes
    assert (changes.on, changes.off, changes.signature) == ({"pdpe1gb"}, {"hle"}, ())


def test_feature_change_to_a_bare_name_applies_after_its_version(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell,+pcid,-hle")
    assert resolution.version.name == "Haswell-v1"
    assert "hle" not in resolution.definition.features
    assert "pcid" in resolution.definition.features
    assert resolution.changes.off == {"hle"}


def test_feature_change_that_changes_nothing_is_not_a_change(q10: Catalog) -> None:
    """Haswell-v4 already has pcid and lacks hle: the definition is Haswell-v4's."""
    resolution = resolve(q10, "Haswell-v4,+pcid,-hle")
    assert resolution.definition == resolve(q10, "Haswell-v4").definition
    assert not resolution.changes


def test_feature_changes_accept_qemu_alias_spellings(q10: Catalog) -> None:
    assert resolve(q10, "Haswell-v1,-sse4_1").changes.off == {"sse4.1"}


def test_unknown_feature_in_a_change_suggests_close_names(q10: Catalog) -> None:
    with pytest.raises(UnknownFeature) as caught:
        resolve(q10, "Haswell,+pcidd")
    assert caught.value.suggestions[0] == "pcid"
    assert "did you mean pcid" in str(caught.value)


def test_unknown_feature_that_looks_like_an_option_suggests_the_option(q10: Catalog) -> None:
    with pytest.raises(UnknownFeature) as caught:
        resolve(q10, "Haswell,bset=on")
    assert "best=on" in caught.value.suggestions


def test_legacy_revision_start_then_changes_differ_from_its_version(q10: Catalog) -> None:
    """Under pc-i440fx-2.4 the changes turn Haswell-v1 into the revision, plus the user's."""
    changes = resolve(q10, "Haswell,-hle", machine="pc-i440fx-2.4").changes
    assert changes.off == {"abm", "hle"}
    assert dict(changes.signature) == {"stepping": 1}


# ------------------------------------------------------------------------------ best


def test_best_picks_the_highest_runnable_version(q10: Catalog) -> None:
    resolution = best(q10, amd_like_host(q10))
    assert (resolution.name, resolution.rule) == ("Haswell-v4", Rule.BEST)


def test_best_is_not_monotone_and_reports_lower_blocked_versions(q10: Catalog) -> None:
    """v2 and v4 run without TSX while v1 and v3 need it: both are reported, highest first."""
    resolution = best(q10, amd_like_host(q10))
    assert resolution.blockers == (("Haswell-v3", ("hle", "rtm")), ("Haswell-v1", ("hle", "rtm")))


def test_best_on_is_the_same_as_version_best(q10: Catalog) -> None:
    host = amd_like_host(q10)
    assert best(q10, host, "Haswell,best=on").name == best(q10, host).name


def test_best_without_spec_ctrl_and_tsx_is_v2(q10: Catalog) -> None:
    host = kvm_host(features_of(q10, "Haswell-v4") - {"spec-ctrl"})
    resolution = best(q10, host)
    assert resolution.name == "Haswell-v2"
    assert resolution.blockers == (
        ("Haswell-v4", ("spec-ctrl",)),
        ("Haswell-v3", ("hle", "rtm", "spec-ctrl")),
        ("Haswell-v1", ("hle", "rtm")),
    )


def test_best_tests_versions_with_the_feature_changes_applied(q10: Catalog) -> None:
    host = kvm_host(features_of(q10, "Haswell-v4") - {"spec-ctrl"})
    assert best(q10, host).name == "Haswell-v2"
    assert best(q10, host, "Haswell,version=best,-spec-ctrl").name == "Haswell-v4"


def test_best_with_no_runnable_version_lists_every_version_blockers(q10: Catalog) -> None:
    host = kvm_host(features_of(q10, "Haswell-v4") - {"avx2", "hle", "rtm"})
    with pytest.raises(NotRunnable) as caught:
        best(q10, host)
    assert caught.value.blockers == {
        "Haswell-v4": ("avx2",),
        "Haswell-v3": ("avx2", "hle", "rtm"),
        "Haswell-v2": ("avx2",),
        "Haswell-v1": ("avx2", "hle", "rtm"),
    }
    assert "Haswell-v1: missing avx2, hle, rtm" in str(caught.value)


def test_best_without_a_host_says_it_needs_host_capabilities(q10: Catalog) -> None:
    with pytest.raises(HostError, match="needs what the host offers under kvm"):
        Resolver(q10, accel="kvm").resolve("Haswell,version=best")


def test_best_with_a_host_probed_for_another_accelerator_needs_capabilities(
    q10: Catalog,
) -> None:
    host = HostCapabilities("tcg-only", {"tcg": features_of(q10, "Haswell-v4", "tcg")})
    with pytest.raises(HostError, match="needs what the host offers under kvm"):
        Resolver(q10, accel="kvm", host=host).resolve("Haswell,version=best")


# ------------------------------------------------------------------------------ host, enforce


def test_missing_features_of_the_chosen_version_are_reported(q10: Catalog) -> None:
    host = kvm_host(features_of(q10, "Haswell-v4") - {"spec-ctrl"})
    resolution = Resolver(q10, accel="kvm", host=host).resolve("Haswell-v4")
    assert resolution.missing == ("spec-ctrl",)


def test_enforce_with_a_missing_feature_is_not_runnable(q10: Catalog) -> None:
    host = kvm_host(features_of(q10, "Haswell-v4") - {"spec-ctrl"})
    with pytest.raises(NotRunnable) as caught:
        Resolver(q10, accel="kvm", host=host).resolve("Haswell-v4,enforce")
    assert caught.value.blockers == {"Haswell-v4": ("spec-ctrl",)}


def test_enforce_after_turning_the_missing_feature_off_resolves(q10: Catalog) -> None:
    host = kvm_host(features_of(q10, "Haswell-v4") - {"spec-ctrl"})
    resolution = Resolver(q10, accel="kvm", host=host).resolve("Haswell-v4,-spec-ctrl,enforce")
    assert resolution.enforce
    assert resolution.missing == ()


def test_without_a_host_nothing_is_missing(q10: Catalog) -> None:
    assert resolve(q10, "Haswell-v4,enforce", accel="kvm").missing == ()


# ------------------------------------------------------------------------------ accelerators


def test_kvm_adds_its_paravirt_defaults(q10: Catalog) -> None:
    kvm = features_of(q10, "Haswell-v4", "kvm")
    tcg = features_of(q10, "Haswell-v4", "tcg")
    assert {"kvmclock", "x2apic"} <= kvm
    assert "kvmclock" not in tcg


def test_kvm_switches_svm_off(q10: Catalog) -> None:
    assert "svm" in q10.models["EPYC"].versions[0].definition.features
    assert "svm" not in features_of(q10, "EPYC-v1", "kvm")
    assert "svm" in features_of(q10, "EPYC-v1", "tcg")


def test_tcg_switches_vme_off(q10: Catalog) -> None:
    assert "vme" in q10.models["Haswell"].versions[0].definition.features
    assert "vme" not in features_of(q10, "Haswell-v1", "tcg")
    assert "vme" in features_of(q10, "Haswell-v1", "kvm")


def test_kvm_reports_the_host_vendor(q10: Catalog) -> None:
    resolution = Resolver(q10, accel="kvm", host=amd_like_host(q10)).resolve("Haswell-v4")
    assert resolution.definition.signature.vendor == "AuthenticAMD"


def test_tcg_keeps_the_model_vendor_whatever_the_host(q10: Catalog) -> None:
    offers = features_of(q10, "Haswell-v4", "tcg")
    host = HostCapabilities("amd", {"tcg": offers}, "AuthenticAMD")
    resolution = Resolver(q10, accel="tcg", host=host).resolve("Haswell-v4")
    assert resolution.definition.signature.vendor == "GenuineIntel"


def test_kvm_without_a_host_keeps_the_model_vendor(q10: Catalog) -> None:
    assert resolve(q10, "Haswell-v4", accel="kvm").definition.signature.vendor == "GenuineIntel"


def test_host_vendor_is_not_a_change_to_put_on_the_command_line(q10: Catalog) -> None:
    """KVM itself reports the host vendor; -cpu need not (and must not) set it."""
    resolution = Resolver(q10, accel="kvm", host=amd_like_host(q10)).resolve("Haswell-v4")
    assert not resolution.changes


def test_resolution_records_machine_and_accelerator(q72: Catalog) -> None:
    resolution = resolve(q72, "Haswell", machine="q35", accel="kvm")
    assert (resolution.machine, resolution.accel) == ("pc-q35-7.2", "kvm")


def test_tcg_without_a_host_checks_what_tcg_offers(q10: Catalog) -> None:
    """TCG offers the same on every host: the catalog records it, so no host file is needed."""
    resolution = resolve(q10, "Haswell-v4", accel="tcg")
    expected = tuple(sorted(resolution.definition.features - q10.tcg_offers))
    assert expected
    assert resolution.missing == expected
