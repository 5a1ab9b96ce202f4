"""The <cpu> cpuver writes for libvirt (emit/libvirt.py): every feature libvirt can name, the model
name that gives the rest exactly, the vendor, paravirtual settings, older libvirt releases.

That libvirt 11.3 accepts it and starts it with check='full', and that the vCPU is then the pin,
is shown against real daemons in tests/libvirt/.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from cpuver.api import open_catalog
from cpuver.catalog import Catalog
from cpuver.domain.pinning import Pin, pin
from cpuver.domain.xml import cpu_element
from cpuver.emit.libvirt import LibvirtTarget, cpu_xml, inexpressible, pinned_cpu
from cpuver.features import FeatureTable
from cpuver.host.capabilities import HostCapabilities
from cpuver.resolve import Resolution, Resolver


@pytest.fixture(scope="module")
def q10() -> Catalog:
    return open_catalog("10.0")


def resolve(
    catalog: Catalog,
    spec: str,
    machine: str = "pc-q35-10.0",
    accel: str = "tcg",
    host: HostCapabilities | None = None,
) -> Resolution:
    return Resolver(catalog, machine=machine, accel=accel, host=host).resolve(spec)


def pinned(catalog: Catalog, spec: str, **kwargs: str) -> Pin:
    return pin(resolve(catalog, spec, **kwargs), catalog)  # type: ignore[arg-type]


def cpu_of(resolution: Resolution, catalog: Catalog) -> ET.Element:
    return ET.fromstring(cpu_xml(resolution, catalog))


def policies(cpu: ET.Element) -> dict[str, str]:
    return {f.attrib["name"]: f.attrib["policy"] for f in cpu.findall("feature")}


def test_cpu_is_custom_exact_with_full_check(q10: Catalog) -> None:
    cpu = cpu_of(resolve(q10, "Westmere-v1"), q10)
    assert cpu.attrib == {"mode": "custom", "match": "exact", "check": "full"}


def test_every_feature_libvirt_can_name_is_required_or_disabled(q10: Catalog) -> None:
    """libvirt's own Westmere-v1 lacks pclmuldq, hypervisor and arat: the model alone fails
    check='full', so every feature is stated."""
    table = FeatureTable.bundled()
    resolution = resolve(q10, "Westmere-v1")
    stated = policies(cpu_of(resolution, q10))
    expected = {
        table.libvirt_name(f): "require" if f in resolution.definition.features else "disable"
        for f in q10.known_features
        if table.libvirt_name(f) is not None
    }
    assert stated == expected
    assert stated["pclmuldq"] == stated["hypervisor"] == stated["arat"] == "require"


def test_features_use_libvirt_spellings(q10: Catalog) -> None:
    stated = policies(cpu_of(resolve(q10, "Haswell-v1,-pclmulqdq"), q10))
    assert (stated["pclmuldq"], stated["lahf_lm"]) == ("disable", "require")
    assert "pclmulqdq" not in stated and "lahf-lm" not in stated


def test_model_is_the_versioned_name_without_fallback(q10: Catalog) -> None:
    model = cpu_of(resolve(q10, "Haswell"), q10).find("model")
    assert model is not None
    assert (model.text, model.attrib) == ("Haswell-v1", {"fallback": "forbid"})


def test_tcg_keeps_the_models_own_vendor(q10: Catalog) -> None:
    model = cpu_of(resolve(q10, "Haswell-v4"), q10).find("model")
    assert model is not None and "vendor_id" not in model.attrib


def test_kvm_always_sets_the_vendor_because_kvm_reports_the_hosts(q10: Catalog) -> None:
    amd_host = HostCapabilities("epyc", {"kvm": q10.known_features}, "AuthenticAMD")
    for host, vendor in ((None, "GenuineIntel"), (amd_host, "AuthenticAMD")):
        model = cpu_of(resolve(q10, "Haswell-v4", accel="kvm", host=host), q10).find("model")
        assert model is not None and model.get("vendor_id") == vendor


def test_a_legacy_revision_is_written_as_the_bare_name_that_gives_it_exactly() -> None:
    """Under pc-i440fx-2.4 bare Haswell has stepping 1 and no abm, which Haswell-v1 lacks."""
    q72 = open_catalog("7.2")
    resolution = resolve(q72, "Haswell,version=2.4.0", machine="pc-i440fx-2.4")
    assert resolution.name == "Haswell-2.4.0"
    model = cpu_of(resolution, q72).find("model")
    assert model is not None and model.text == "Haswell"
    assert inexpressible(resolution, q72) == ()


def test_the_same_revision_under_a_new_machine_type_cannot_be_said(q10: Catalog) -> None:
    resolution = resolve(q10, "Haswell,version=2.4.0")
    assert "stepping=1" in inexpressible(resolution, q10)
    assert "<!-- not expressible in libvirt: stepping=1 -->" in cpu_xml(resolution, q10)


def test_a_feature_libvirt_has_no_name_for_is_lost_only_when_it_differs(q10: Catalog) -> None:
    plain = resolve(q10, "Haswell-v1")
    assert inexpressible(plain, q10) == ()
    changed = resolve(q10, "Haswell-v1,+xstore")
    assert inexpressible(changed, q10) == ("xstore=on",)
    assert "<!-- not expressible in libvirt: xstore=on -->" in cpu_xml(changed, q10)


def test_kvm_paravirtual_features_become_libvirts_own_elements(q10: Catalog) -> None:
    cpu = pinned_cpu(pinned(q10, "Haswell-v4,-kvmclock,+kvm-pv-unhalt", accel="kvm"), q10)
    assert cpu.inexpressible == ()
    assert dict(cpu.settings) == {"kvmclock": False, "kvm-pv-unhalt": True}


def test_paravirtual_features_under_tcg_cannot_be_said(q10: Catalog) -> None:
    assert inexpressible(resolve(q10, "Westmere-v1,+kvmclock"), q10) == ("kvmclock=on",)


def test_the_metadata_records_what_the_cpu_cannot_name(q10: Catalog) -> None:
    table = FeatureTable.bundled()
    made = pinned(q10, "Westmere-v1")
    meta = pinned_cpu(made, q10, policy="best").metadata
    unnamed = {f for f in made.on | made.off if table.libvirt_name(f) is None}
    assert meta.on | meta.off == unnamed
    assert (meta.policy, meta.base, meta.model, meta.fingerprint) == (
        "best",
        "Westmere-v1",
        "Westmere-v1",
        made.fingerprint,
    )
    assert meta.signature == made.signature.as_dict()


def test_libvirt_before_10_10_gets_an_alias_that_names_the_same_version(q10: Catalog) -> None:
    old = LibvirtTarget((9, 0, 0))
    resolution = resolve(q10, "Haswell-v4")
    model = ET.fromstring(cpu_xml(resolution, q10, old)).find("model")
    assert model is not None and model.text == "Haswell-noTSX-IBRS"
    assert inexpressible(resolution, q10, old) == ()


def test_a_model_name_the_daemon_lacks_is_named_as_lost(q10: Catalog) -> None:
    """Only the bare name known: Haswell-v4's model-id is not the bare Haswell's."""
    only_bare = LibvirtTarget((9, 0, 0), frozenset({"Haswell"}))
    lost = inexpressible(resolve(q10, "Haswell-v4"), q10, only_bare)
    assert any(item.startswith("model-id=") for item in lost)


def test_no_name_the_daemon_knows_is_named_as_lost(q10: Catalog) -> None:
    nothing = LibvirtTarget((11, 3, 0), frozenset())
    lost = inexpressible(resolve(q10, "Haswell-v4"), q10, nothing)
    assert lost[0] == "model: libvirt 11.3.0 knows no name for Haswell-v4"


def test_a_lost_model_id_with_a_double_dash_keeps_the_xml_valid(q10: Catalog) -> None:
    cpu = pinned_cpu(pinned(q10, "Westmere-v1"), q10)
    text = cpu_element(dataclasses.replace(cpu, inexpressible=('model-id="a--b--"',)))
    ET.fromstring(text)
    assert 'model-id="a- -b- -"' in text
