"""QEMU's rules, where its host/max expansion hides what its filter allows (host.evidence).

Each rule is shown on a real host libvirt recorded (tests/data/libvirt): the expansion lacks the
feature, QEMU's own query-cpu-definitions did not refuse it, and cpuver offers it.
"""

from __future__ import annotations

from typing import Any

import pytest

from cpuver.api.catalogs import open_catalog
from cpuver.api.evidence import offers_of
from cpuver.catalog.releases import catalog_for_release
from cpuver.features import FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.host.evidence import AccelEvidence, Expansion, Offer, offer, settle
from cpuver.resolve import Resolver
from replays import evidence_of, manifest


def recording(release: str, host: str = "ryzen") -> dict[str, Any]:
    return next(
        e
        for e in manifest()
        if e["release"] == release and host in e["replies"] and e["replies"].endswith(".replies.gz")
    )


def recorded(release: str, accel: str, host: str = "ryzen") -> AccelEvidence:
    return evidence_of(recording(release, host), "replies").accels[accel]


def offers(release: str, accel: str, host: str = "ryzen") -> Offer:
    short = ".".join(release.split(".")[:2])
    return offers_of(recorded(release, accel, host), short, open_catalog(short), False)


def shown(evidence: AccelEvidence, feature: str) -> bool:
    return any(e.props.get(feature) is True for e in evidence.expansions)


def test_kvm_offers_topoext_which_the_host_expansion_never_shows() -> None:
    evidence = recorded("9.2.0", "kvm")
    assert not shown(evidence, "topoext")
    assert evidence.definitions is not None
    assert "topoext" not in evidence.definitions["EPYC-Rome-v1"]  # QEMU did not refuse it
    assert "topoext" in offers("9.2.0", "kvm").features


def test_the_bare_expansion_would_block_every_epyc_version_by_topoext() -> None:
    """What a reader without QEMU's rules answers: wrong for every EPYC version on that host."""
    evidence = recorded("9.2.0", "kvm")
    catalog = open_catalog("9.2")
    raw = frozenset().union(*(e.enabled(FeatureTable.bundled()) for e in evidence.expansions))
    resolver = Resolver(catalog, "none", "kvm", HostCapabilities("h", {"kvm": raw}))
    epyc = [ref for ref in catalog.names() if ref.name.startswith("EPYC-Rome-v")]
    assert all("topoext" in resolver.unavailable(ref) for ref in epyc)
    assert evidence.definitions is not None
    assert not any("topoext" in evidence.definitions[ref.name] for ref in epyc)


def test_invtsc_is_offered_when_the_migratable_off_expansion_shows_it() -> None:
    evidence = recorded("8.2.0", "kvm")
    assert [e.migratable for e in evidence.expansions] == [True, False, False]
    assert "invtsc" in offers("8.2.0", "kvm").features


def test_a_migratable_expansion_alone_leaves_invtsc_unknown_and_says_why() -> None:
    evidence = recorded("8.2.0", "kvm")
    alone = AccelEvidence("kvm", evidence.expansions[:1])
    found = offer(alone, "8.2", catalog_for_release("8.2").known_features)
    assert "invtsc" not in found.features
    assert found.unknown == {
        "invtsc": "not in QEMU's expansion: a migratable host expansion never shows invtsc "
        "(give the migratable=off reply)"
    }


@pytest.mark.parametrize(("release", "offered"), [("8.0.0", False), ("8.1.0", True)])
def test_tcg_offers_the_arch_capabilities_bits_from_qemu_8_1(release: str, offered: bool) -> None:
    evidence = recorded(release, "tcg")
    assert not shown(evidence, "ibrs-all")
    assert evidence.definitions is not None
    refused = "ibrs-all" in evidence.definitions["Cascadelake-Server-v2"]
    assert refused is not offered
    assert ("ibrs-all" in offers(release, "tcg").features) is offered


def test_tcg_never_refuses_kvm_paravirtual_features() -> None:
    found = offers("7.2.0", "tcg")
    assert {"kvmclock", "kvm-pv-eoi", "kvm-asyncpf"} <= found.features
    assert not shown(recorded("7.2.0", "tcg"), "kvmclock")


@pytest.mark.parametrize(("release", "kept"), [("5.0", True), ("5.1", False), ("7.2", False)])
def test_before_5_1_a_model_keeps_its_svm_features_with_svm_off_under_kvm(
    release: str, kept: bool
) -> None:
    catalog = catalog_for_release(release)
    epyc = catalog.effective(catalog.lookup("EPYC-v1"), catalog.machine("none"), "kvm")
    assert "svm" not in epyc.features
    assert ("npt" in epyc.features) is kept


def test_qemu_5_0_on_an_intel_host_refused_npt_as_cpuver_says() -> None:
    evidence = recorded("5.0.0", "kvm", "intel")
    assert evidence.definitions is not None
    assert {"npt", "nrip-save"} <= set(evidence.definitions["EPYC-v1"])
    assert "npt" not in offers("5.0.0", "kvm", "intel").features


def intel_host(release: str | None, **props: Any) -> Offer:
    expansion = Expansion("host", "static", False, {"vendor": "GenuineIntel", **props})
    known = catalog_for_release("11.1").known_features
    return offer(AccelEvidence("kvm", (expansion,)), release, known)


@pytest.mark.parametrize(("release", "offered"), [("9.0", False), ("9.1", True)])
def test_kvm_offers_amd_machine_check_recovery_from_9_1_even_to_intel_hosts(
    release: str, offered: bool
) -> None:
    assert ({"succor", "overflow-recov"} <= intel_host(release).features) is offered


@pytest.mark.parametrize(("release", "offered"), [("8.1", False), ("8.2", True)])
def test_kvm_offers_ht_from_8_2(release: str, offered: bool) -> None:
    assert ("ht" in intel_host(release).features) is offered


def test_a_reply_without_its_release_says_which_features_depend_on_it() -> None:
    found = intel_host(None, kvmclock=True)
    assert "topoext" in found.features  # every release
    assert set(found.unknown) == {"ht", "succor", "overflow-recov", "pdcm", "arch-lbr"}
    assert found.unknown["ht"] == (
        "not in QEMU's expansion, and whether QEMU offers it depends on the release (since 8.2): "
        "the reply does not say which QEMU release gave it"
    )


def test_query_cpu_definitions_settle_what_the_expansion_cannot_tell() -> None:
    found = Offer(frozenset({"sse2", "hle"}), {"ht": "depends on the release"}, ())
    settled = settle(
        found,
        {"A-v1": ("hle",), "B-v1": ()},
        {"A-v1": frozenset({"sse2", "hle"}), "B-v1": frozenset({"sse2", "ht"})},
    )
    assert settled.features == {"sse2", "ht"}  # QEMU refused hle, ran B with ht
    assert settled.unknown == {}
    assert settled.rules == ("settled by QEMU's query-cpu-definitions",)


def test_definitions_of_names_the_catalog_does_not_know_are_ignored() -> None:
    found = Offer(frozenset({"sse2"}), {}, ())
    assert settle(found, {"Future-v1": ("avx",)}, {}).features == {"sse2"}
